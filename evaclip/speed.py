"""GPU speed: regional compilation with an eager fallback, and which attention kernel runs.

Regional compilation: `torch.compile` on each transformer block's forward (vision and text) rather
than the whole model: the blocks of a tower are identical, so Dynamo compiles one graph per tower
and reuses it (PyTorch's "regional compilation" recipe, pytorch.org/tutorials/recipes/
regional_compilation.html), which keeps the first step short, and DeepSpeed's hooks, the loss and
the cross-rank gathers stay outside the compiled code. When compilation fails (no compiler, an
unsupported op, a Triton error), the block's first call falls back to eager and every block stays
eager from then on, with one warning; errors after a block's first successful call are real
errors and propagate.

Attention kernel: flash-attn's `flash_attn_func` when importable (its ROCm build exposes the same
function; evaclip.model.attention), else PyTorch SDPA, which picks, in
`torch._C._get_sdp_priority_order()`, the first enabled kernel whose constraints the inputs meet
(FlashAttention-2, memory-efficient, cuDNN, math). `attention_kernel` asks the same questions
PyTorch asks (`torch.backends.cuda.can_use_*`) so the trainer can report the choice once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# torch.nn.attention.SDPBackend values (torch/_C: MATH 0, FLASH_ATTENTION 1, EFFICIENT_ATTENTION 2,
# CUDNN_ATTENTION 3); the fallback order is PyTorch 2.5+'s default priority.
_SDPA_NAMES = {0: "sdpa-math", 1: "sdpa-flash", 2: "sdpa-mem-efficient", 3: "sdpa-cudnn"}
_DEFAULT_PRIORITY = [1, 2, 0, 3]


@dataclass
class CompileState:
    """Shared by the compiled blocks of a model: whether compiled code is in use."""

    active: bool = True
    error: str | None = None
    blocks: int = 0
    warn: Callable[[str], None] = field(default=lambda line: None)

    def describe(self) -> str:
        if self.blocks == 0:
            return "off"
        return f"regional ({self.blocks} blocks)" if self.active else f"failed, eager ({self.error})"


def _summary(e: BaseException) -> str:
    """One line naming the failure and its root cause (Dynamo wraps the compiler's exception)."""
    root: BaseException = e
    seen = {id(e)}
    while True:
        nxt = root.__cause__ or getattr(root, "inner_exception", None)
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        root = nxt
    text = " ".join(str(root).split())[:200]
    return type(e).__name__ + (f" ({type(root).__name__}: {text})" if root is not e else f": {text}")


class _FallbackForward:
    """A block's forward: the compiled one until its first call fails, then the eager one."""

    def __init__(self, eager: Callable[..., Any], compiled: Callable[..., Any], state: CompileState) -> None:
        self.eager, self.compiled, self.state = eager, compiled, state
        self.proven = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.state.active:
            return self.eager(*args, **kwargs)
        if self.proven:
            return self.compiled(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as e:  # compilation failed: run this and every later call eagerly
            self.state.active = False
            self.state.error = _summary(e)
            self.state.warn(f"torch.compile failed, running eager: {self.state.error}")
            return self.eager(*args, **kwargs)
        self.proven = True
        return out


def model_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of an EvaCLIP: the compilation regions."""
    return [*model.visual.blocks, *model.text.transformer.resblocks]


def compile_blocks(
    model: nn.Module, *, backend: Any = "inductor", warn: Callable[[str], None] | None = None
) -> CompileState:
    """Compile every block's forward in place (lazily: the work happens on the first call)."""
    state = CompileState(warn=warn or (lambda line: None))
    for blk in model_blocks(model):
        eager = blk.forward
        blk.forward = _FallbackForward(eager, torch.compile(eager, backend=backend, dynamic=False), state)
        state.blocks += 1
    return state


def should_compile(setting: str, device: torch.device, zero_stage: int) -> bool:
    """`auto`: on a GPU, except under ZeRO-3, whose parameter hooks swap each parameter's storage
    between its shard and the gathered tensor around every module call (guards on the parameters
    would recompile); `on`/`off` as asked."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return device.type == "cuda" and zero_stage < 3


def attention_kernel(
    batch: int, heads: int, seq: int, head_dim: int, dtype: torch.dtype, device: torch.device, *, causal: bool
) -> str:
    """The kernel evaclip.model.attention runs for inputs of this shape: 'flash-attn' (or
    'flash-attn-rocm'), or the SDPA kernel PyTorch will pick ('sdpa-flash', 'sdpa-mem-efficient',
    'sdpa-cudnn', 'sdpa-math'; 'sdpa-cpu' on a CPU)."""
    from evaclip.model import _backend, _flash_attn_func

    if device.type != "cuda":
        return "sdpa-cpu"
    if _backend != "sdpa" and dtype in (torch.float16, torch.bfloat16) and _flash_attn_func() is not None:
        return "flash-attn-rocm" if torch.version.hip else "flash-attn"
    q = torch.empty(batch, heads, seq, head_dim, dtype=dtype, device=device)
    params = torch.backends.cuda.SDPAParams(q, q, q, None, 0.0, causal, False)
    order = getattr(torch._C, "_get_sdp_priority_order", lambda: _DEFAULT_PRIORITY)()
    cuda = torch.backends.cuda
    checks = {
        1: lambda: cuda.flash_sdp_enabled() and cuda.can_use_flash_attention(params),
        2: lambda: cuda.mem_efficient_sdp_enabled() and cuda.can_use_efficient_attention(params),
        3: lambda: cuda.cudnn_sdp_enabled() and cuda.can_use_cudnn_attention(params),
        0: lambda: cuda.math_sdp_enabled(),
    }
    for backend in order:
        backend = int(backend)
        if backend in checks and checks[backend]():
            return _SDPA_NAMES[backend]
    return "sdpa-none"


def tower_attention_kernels(
    model_spec: Any, image_size: int, micro_batch: int, dtype: torch.dtype, device: torch.device
) -> dict[str, str]:
    """{'vision': kernel, 'text': kernel} for the trainer's shapes."""
    v, t = model_spec.vision, model_spec.text
    return {
        "vision": attention_kernel(
            micro_batch,
            v.heads,
            (image_size // v.patch_size) ** 2 + 1,
            v.head_width,
            dtype,
            device,
            causal=False,
        ),
        "text": attention_kernel(
            micro_batch, t.heads, t.context_length, t.width // t.heads, dtype, device, causal=True
        ),
    }
