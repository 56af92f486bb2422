"""Every ATen operation one training micro-batch of the bundled model executes: kind, bytes, count.

The planner prices memory-bound work by bytes over HBM bandwidth and host time by kernel count
(planner/ops.py). This module checks those counts against the real model the way
evaclip/flops.py checks FLOPs against FlopCounterMode: it runs one forward + backward of
`evaclip.model` (and `evaclip.loss.clip_loss`, one rank, local loss) under a TorchDispatchMode on the
CPU with small real tensors and records every ATen operation that reaches the dispatcher:

- kind: `gemm` (mm, addmm, bmm, convolution and their backward), `attention` (the fused SDPA kernel
  and its backward), `copy` (dtype casts, clones, concatenation, gathers and scatters: data moved, not
  computed) or `elementwise` (everything else that touches memory: pointwise ops, norms, reductions);
  views (outputs sharing an input's storage: view, transpose, slicing, detach) and allocations
  (empty*) run no kernel and are not counted;
- bytes: elements read from every input (an expanded, stride-0 dimension is read once) plus elements
  written to every output, times the element size — what a kernel that reads each operand once moves;
- count: one per operation (one host dispatch; planner/ops.py counts kernels the same way).

Precision follows the trainer: `eager` is DeepSpeed bf16 (the module cast to bf16, bf16 images);
`amp` is plain PyTorch under `torch.autocast` with fp32 weights (OpenCLIP's trainer,
benchmarks/gpu_check.py without DeepSpeed). The CPU's autocast policy differs from CUDA's in one place
that matters here: CUDA runs `layer_norm` in fp32 (aten/src/ATen/autocast_mode.cpp, the `fp32` list),
the CPU in the input's dtype; during an `amp` census the CPU's autocast kernel of `layer_norm` is
replaced by CUDA's policy (cast input, weight and bias to fp32), and removed afterwards.

SDPA on the CPU dispatches to `_scaled_dot_product_flash_attention_for_cpu`, one fused operation
forward and one backward, as the CUDA flash / efficient / cuDNN kernels. Its output is laid out like
the query (as CUDA flash-attention's `empty_like(q)`): q from RoPE's cat is (batch, heads, seq,
head_dim), so the `transpose(1, 2).reshape` after attention copies; the text tower's q, a view of the
fused projection, gives a (batch, seq, heads, head_dim) output and no copy.

What the census cannot see: work a CUDA kernel does beyond its operands (LayerNorm's backward reads
x and dy a second time for the weight gradients), kernels one ATen op launches several of, and the
CPU keeping LayerNorm's row statistics in the input's dtype where CUDA keeps fp32.

Per block: the difference between the census of a tower with d + 1 and with d blocks (blocks are
identical; drop path's rate differs but not its operations), so nothing depends on attributing
backward operations to modules. torch is imported by the caller's first use; planner/ does not
import this module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from planner.spec import ModelSpec

KINDS = ("gemm", "attention", "elementwise", "copy")

_GEMM = {
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "convolution",
    "convolution_backward",
    "_convolution",
    "mkldnn_convolution",
}
_ATTENTION_PREFIX = ("_scaled_dot_product", "_flash_attention", "_efficient_attention")
_COPY = {
    "_to_copy",
    "copy_",
    "clone",
    "cat",
    "stack",
    "index",
    "index_select",
    "gather",
    "scatter",
    "scatter_add",
    "index_put",
    "index_put_",
    "_index_put_impl_",
    "embedding",
    "embedding_dense_backward",
    "slice_backward",
    "select_backward",
    "index_add",
    "new_zeros",
    "zeros_like",
}
_GATHERS = {"embedding", "index", "index_select", "gather"}
# Allocations without a kernel, profiler markers, and the call that reads a scalar back to the host
# (`.item()`, a Python `if` on a tensor: counted apart as a host-device synchronisation).
_FREE = {
    "empty",
    "empty_like",
    "empty_strided",
    "new_empty",
    "new_empty_strided",
    "_local_scalar_dense",
    "_record_function_enter_new",
    "_record_function_exit",
    "_is_mkldnn_fp16_supported",
}
_SYNC = "_local_scalar_dense"


@dataclass
class OpRecord:
    """Totals for one ATen operation (by its overload name)."""

    kind: str
    count: int = 0
    bytes: int = 0


@dataclass
class Census:
    """Operations by name, and totals by kind."""

    ops: dict[str, OpRecord] = field(default_factory=dict)
    syncs: int = 0  # host waits for the device (`.item()`)

    def add(self, name: str, kind: str, nbytes: int) -> None:
        rec = self.ops.setdefault(name, OpRecord(kind))
        rec.count += 1
        rec.bytes += nbytes

    def count(self, kinds: tuple[str, ...] = KINDS) -> int:
        return sum(r.count for r in self.ops.values() if r.kind in kinds)

    def bytes(self, kinds: tuple[str, ...] = KINDS) -> int:
        return sum(r.bytes for r in self.ops.values() if r.kind in kinds)

    def __sub__(self, other: Census) -> Census:
        out = Census(syncs=self.syncs - other.syncs)
        for name in set(self.ops) | set(other.ops):
            a, b = self.ops.get(name), other.ops.get(name)
            kind = (a or b).kind  # type: ignore[union-attr]
            rec = OpRecord(
                kind,
                (a.count if a else 0) - (b.count if b else 0),
                (a.bytes if a else 0) - (b.bytes if b else 0),
            )
            if rec.count or rec.bytes:
                out.ops[name] = rec
        return out

    def table(self) -> str:
        rows = sorted(self.ops.items(), key=lambda kv: (kv[1].kind, -kv[1].bytes))
        lines = [f"{'op':48} {'kind':11} {'count':>6} {'bytes':>14}"]
        lines += [f"{n:48} {r.kind:11} {r.count:6d} {r.bytes:14,d}" for n, r in rows]
        return "\n".join(lines)


def _distinct_bytes(t: Any) -> int:
    """Bytes of the distinct elements a tensor addresses (a stride-0 dimension is one element)."""
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            n *= size
    return (n if t.numel() else 0) * t.element_size()


def _tensors(x: Any) -> Iterator[Any]:
    import torch

    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _tensors(y)


def classify(name: str) -> str | None:
    """Kind of an ATen operation by its packet name (None: no kernel)."""
    if name in _FREE:
        return None
    if name in _GEMM:
        return "gemm"
    if name.startswith(_ATTENTION_PREFIX):
        return "attention"
    if name in _COPY:
        return "copy"
    return "elementwise"


def _make_mode(census: Census) -> Any:
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Recorder(TorchDispatchMode):
        def __torch_dispatch__(
            self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
        ) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = func.overloadpacket.__name__
            if name == _SYNC:
                census.syncs += 1
            kind = classify(name)
            if kind is None:
                return out
            inputs = list(_tensors(args)) + list(_tensors(kwargs))
            outputs = list(_tensors(out))
            storages = {t.untyped_storage().data_ptr() for t in inputs if t.numel()}
            mutates = name.endswith("_") or func._schema.is_mutable
            # A view (or detach, alias, _unsafe_view) returns an input's storage without moving data.
            if (
                not mutates
                and outputs
                and all(t.untyped_storage().data_ptr() in storages for t in outputs if t.numel())
            ):
                return out
            if name in _GATHERS:
                # A gather reads the rows it writes (and the indices), not the whole table.
                nbytes = 2 * sum(_distinct_bytes(t) for t in outputs) + sum(
                    _distinct_bytes(t) for t in inputs if not t.is_floating_point()
                )
            else:
                nbytes = sum(_distinct_bytes(t) for t in inputs) + sum(_distinct_bytes(t) for t in outputs)
            census.add(name, kind, nbytes)
            return out

    return _Recorder()


@contextmanager
def _cuda_autocast_layer_norm() -> Iterator[None]:
    """CPU autocast with CUDA's policy for layer_norm: run it in fp32 (inputs cast up)."""
    import torch

    lib = torch.library.Library("aten", "IMPL")  # a temporary override, destroyed below

    def layer_norm_fp32(
        x: Any, shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5, cudnn: bool = True
    ) -> Any:
        keys = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)
        with torch._C._ExcludeDispatchKeyGuard(keys):
            up = [None if t is None else t.float() for t in (x, weight, bias)]
            return torch.ops.aten.layer_norm(up[0], shape, up[1], up[2], eps, cudnn)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        lib.impl("layer_norm", layer_norm_fp32, "AutocastCPU")
    try:
        yield
    finally:
        lib._destroy()


def _with_depths(
    spec: ModelSpec, vision_depth: int | None = None, text_layers: int | None = None
) -> ModelSpec:
    v, t = spec.vision, spec.text
    if vision_depth is not None:
        v = v.model_copy(update={"depth": vision_depth})
    if text_layers is not None:
        t = t.model_copy(update={"layers": text_layers})
    return spec.model_copy(update={"vision": v, "text": t})


def run_census(
    spec: ModelSpec,
    *,
    micro_batch: int,
    image_size: int | None = None,
    patch_dropout: float = 0.0,
    grad_ckpt: bool = False,
    stack: str = "eager",
    precision: str = "bf16",
    seed: int = 0,
) -> Census:
    """One micro-batch (forward, CLIP loss, backward) of the model at `micro_batch` on the CPU.

    stack 'eager': the module and images in `precision` (DeepSpeed bf16/fp16); 'amp': fp32 module
    under torch.autocast(dtype=precision) with CUDA's fp32 policy for layer_norm."""
    import torch

    from evaclip.loss import clip_loss
    from evaclip.model import build_model

    if stack not in ("eager", "amp"):
        raise ValueError(f"the census runs the eager stacks ('eager', 'amp'), not {stack!r}")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    image_size = image_size or spec.vision.image_size
    torch.manual_seed(seed)
    model = build_model(spec, image_size=image_size, patch_dropout=patch_dropout, grad_ckpt=grad_ckpt)
    model.train()
    if stack == "eager":
        model = model.to(dtype)
    images = torch.randn(micro_batch, 3, image_size, image_size, dtype=dtype)
    tokens = torch.randint(1, 100, (micro_batch, spec.text.context_length))
    tokens[:, -1] = spec.text.vocab_size - 1  # end-of-text: the largest id, where the text tower pools
    census = Census()
    amp = stack == "amp" and dtype != torch.float32
    with _cuda_autocast_layer_norm() if amp else _nullcontext():
        with _make_mode(census):
            with torch.autocast("cpu", dtype=dtype, enabled=amp):
                img, txt, scale = model(images, tokens)
                loss = clip_loss(img, txt, scale)
            loss.backward()
    return census


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


@dataclass(frozen=True)
class TowerCensus:
    """One block of a tower (forward + backward), and everything outside the blocks."""

    block: Census
    rest: Census
    layers: int


def block_census(spec: ModelSpec, tower: str, **kw: Any) -> TowerCensus:
    """One block of the vision or text tower: census(d + 1 blocks) − census(d blocks), d = 2 (the
    drop-path rate of the added block is above 0 when the tower's is); `rest` is everything but the
    tower's blocks (stems, heads, loss, and one block of the other tower: both censuses run the
    other tower with one block, which is all the difference needs), from the d-block census."""
    d = 2
    if tower == "vision":
        small = run_census(_with_depths(spec, d, 1), **kw)
        big = run_census(_with_depths(spec, d + 1, 1), **kw)
        layers = spec.vision.depth
    elif tower == "text":
        small = run_census(_with_depths(spec, 1, d), **kw)
        big = run_census(_with_depths(spec, 1, d + 1), **kw)
        layers = spec.text.layers
    else:
        raise ValueError(f"tower must be 'vision' or 'text', not {tower!r}")
    block = big - small
    rest = small
    for _ in range(d):
        rest = rest - block
    return TowerCensus(block, rest, layers)


@dataclass(frozen=True)
class EngineStepCensus:
    """One training step of the real DeepSpeed engine (one rank, one micro-batch) split by phase."""

    forward: Census
    backward: Census  # engine.backward: autograd and DeepSpeed's gradient hooks
    step: Census  # engine.step: gradient reduction, clipping, the optimizer, the parameter copy
    param_tensors: int
    params: int
    optimizer: str  # the class DeepSpeed wrapped the client optimizer in


def engine_step_census(
    spec: ModelSpec, *, micro_batch: int, ds_config: dict[str, Any], optimizer: str = "adamw"
) -> EngineStepCensus:
    """Census of the second step of `deepspeed.initialize(model, torch optimizer, ds_config)` on the
    CPU, in one process (world of one, as benchmarks/gpu_check.py runs it). The first step builds the
    optimizer states; the second is what every later step repeats. The caller sets up the
    single-process environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT) before calling."""
    import deepspeed
    import torch

    from evaclip.loss import clip_loss
    from evaclip.model import build_model

    torch.manual_seed(0)
    model = build_model(spec)
    params = list(model.parameters())
    if optimizer == "adamw":
        # foreach=True: what torch picks by default for CUDA tensors (one op per list of tensors); on
        # the CPU its default is one op per tensor.
        opt: Any = torch.optim.AdamW(
            params, lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05, foreach=True
        )
    elif optimizer == "lamb":
        from evaclip.optim import Lamb

        opt = Lamb(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'lamb', not {optimizer!r}")
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds_config)
    dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
    size = spec.vision.image_size
    images = torch.randn(micro_batch, 3, size, size, dtype=dtype)
    tokens = torch.randint(1, 100, (micro_batch, spec.text.context_length))
    tokens[:, -1] = spec.text.vocab_size - 1
    phases = [Census(), Census(), Census()]
    for record in (False, True):
        with _make_mode(phases[0]) if record else _nullcontext():
            img, txt, scale = engine(images, tokens)
            loss = clip_loss(img, txt, scale)
        with _make_mode(phases[1]) if record else _nullcontext():
            engine.backward(loss)
        with _make_mode(phases[2]) if record else _nullcontext():
            engine.step()
    return EngineStepCensus(
        phases[0],
        phases[1],
        phases[2],
        len(params),
        sum(p.numel() for p in params),
        type(engine.optimizer).__name__,
    )


def counting_calls() -> tuple[Any, Counter[str]]:
    """A TorchFunctionMode that counts every call from Python into torch (operators, tensor methods,
    views, functional ops, attribute access) by name, and the Counter it fills."""
    from torch.overrides import TorchFunctionMode

    counts: Counter[str] = Counter()

    class _Calls(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
        ) -> Any:
            counts[getattr(func, "__name__", str(func))] += 1
            return func(*args, **(kwargs or {}))

    return _Calls(), counts


def _forward_calls(spec: ModelSpec, tower: str) -> tuple[int, int]:
    """(Python-level torch calls, kernels) of one eval-mode forward of a tower on one 16-bit input.
    Every call from Python into torch passes through a TorchFunctionMode once (counting_calls); the
    kernels are the census's (views and allocations excluded)."""
    import torch

    from evaclip.model import build_model

    torch.manual_seed(0)
    model = build_model(spec).eval().to(torch.bfloat16)
    census = Census()
    calls, counts = counting_calls()
    with torch.no_grad(), calls, _make_mode(census):
        if tower == "vision":
            size = spec.vision.image_size
            model.visual(torch.randn(1, 3, size, size, dtype=torch.bfloat16))
        else:
            model.text(torch.randint(1, 100, (1, spec.text.context_length)))
    return sum(counts.values()), census.count()


def forward_calls_per_kernel(spec: ModelSpec, tower: str = "vision") -> tuple[int, int]:
    """(Python-level torch calls, kernels) of one block's eval-mode forward: the tower with d + 1
    blocks minus d (planner/ops.py HOST_CALLS_PER_KERNEL is their ratio)."""
    d = 2
    if tower == "vision":
        small, big = _with_depths(spec, d, 1), _with_depths(spec, d + 1, 1)
    else:
        small, big = _with_depths(spec, 1, d), _with_depths(spec, 1, d + 1)
    (c0, k0), (c1, k1) = _forward_calls(small, tower), _forward_calls(big, tower)
    return c1 - c0, k1 - k0
