"""planner/ops.py's memory-bound bytes and ATen op counts per block equal the op census of the real
model (evaclip/op_census.py: one micro-batch of evaclip.model + clip_loss under a TorchDispatchMode
on the CPU), as compute.py's FLOPs equal FlopCounterMode's.

Tolerances: bytes within 1 % for EVA02-B/16 and 2.5 % for the tiny debug model, op counts exact
(except where noted). What the planner leaves out are terms that do not grow with the tokens: the
norms' weights and biases read forward and their gradients written backward, the bias gradients'
writes, LayerNorm's per-row statistics in the tiny model's rounding, and the RoPE cos/sin tables
(patches × head_dim, read once per op and, under autocast, cast per call). They are a few per cent
of a block of width 64 at two samples and vanish at training shapes (< 0.3 % for B/16 at two).
"""

from __future__ import annotations

import pytest

from planner import ops
from planner import profiles as prof

torch = pytest.importorskip("torch")
census = pytest.importorskip("evaclip.op_census")

MICRO_BATCH = 2


def _seq(m, tower: str) -> int:
    if tower == "vision":
        return (m.vision.image_size // m.vision.patch_size) ** 2 + 1
    return m.text.context_length


def _compare(m, tower: str, stack: str, grad_ckpt: bool, tol: float) -> None:
    tc = census.block_census(m, tower, micro_batch=MICRO_BATCH, stack=stack, grad_ckpt=grad_ckpt)
    nbytes, kernels = ops.block_totals(
        m,
        tower,
        micro_batch=MICRO_BATCH,
        seq=_seq(m, tower),
        stack=stack,
        precision="bf16",
        grad_ckpt=grad_ckpt,
    )
    measured = tc.block.bytes(("elementwise", "copy"))
    assert nbytes == pytest.approx(measured, rel=tol), (tower, stack, tc.block.table())
    assert kernels == tc.block.count(), (tower, stack, tc.block.table())


@pytest.mark.parametrize("stack", ["eager", "amp"])
@pytest.mark.parametrize("tower", ["vision", "text"])
def test_debug_model_blocks_equal_the_census(tower: str, stack: str) -> None:
    _compare(prof.load_model("eva-clip-debug"), tower, stack, False, 0.025)


@pytest.mark.parametrize("stack", ["eager", "amp"])
@pytest.mark.parametrize("tower", ["vision", "text"])
def test_debug_model_with_checkpointing_recomputes_all_but_the_tail(tower: str, stack: str) -> None:
    """Non-reentrant checkpointing recomputes each block's forward during backward, stopping once
    every saved tensor is back: the last Linear's GEMM and the residual add are not rerun (under
    autocast that Linear's input and weight casts are: addmm saves them)."""
    _compare(prof.load_model("eva-clip-debug"), tower, stack, True, 0.025)


@pytest.mark.parametrize("stack", ["eager", "amp"])
def test_rmsnorm_blocks_equal_the_census(stack: str) -> None:
    """EVA-CLIP-8B/18B's RMSNorm, written in eager ops in evaclip/model.py, on the debug model's
    vision tower (with checkpointing: the recompute reruns the norms)."""
    d = prof.load_model("eva-clip-debug")
    m = d.model_copy(update={"vision": d.vision.model_copy(update={"norm": "rmsnorm"})})
    _compare(m, "vision", stack, True, 0.025)


@pytest.mark.parametrize("stack", ["eager", "amp"])
@pytest.mark.parametrize("tower", ["vision", "text"])
def test_eva02_b16_blocks_equal_the_census(tower: str, stack: str) -> None:
    _compare(prof.load_model("eva02-clip-b16"), tower, stack, False, 0.01)


def test_census_kinds_by_hand() -> None:
    """A Linear, a LayerNorm and a view: bytes are operand sizes, views cost nothing."""
    c = census.Census()
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    w = torch.randn(16, 8, dtype=torch.bfloat16)
    with census._make_mode(c):
        y = torch.nn.functional.linear(x, w)
        y.t()
        z = torch.nn.functional.layer_norm(y, (16,))
    assert z.shape == (4, 16)
    assert c.count(("gemm",)) == 1 and c.bytes(("gemm",)) == 2 * (4 * 8 + 16 * 8 + 4 * 16)
    # native_layer_norm: read x, write y (2 B each), mean and rstd per row (the CPU keeps them in the
    # input's dtype, CUDA in fp32: planner/ops.py counts CUDA's 8 bytes per row).
    assert c.ops["native_layer_norm"].bytes == 2 * 4 * 16 * 2 + 2 * 4 * 2
    assert set(c.ops) == {"mm", "native_layer_norm"}


@pytest.fixture
def one_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """The single-process environment DeepSpeed's engine reads (a world of one on a free local port).
    TORCH_EXTENSIONS_DIR is left as the caller has it: DeepSpeed then loads the CPU communication op
    that `make ds-ops` (python -m evaclip.build_ops) built there instead of JIT-building its own copy
    (~90 s idle, minutes loaded)."""
    pytest.importorskip("deepspeed")
    from evaclip.world import single_process_env

    for k, v in single_process_env().items():
        monkeypatch.setenv(k, v)


def _engine_step(m, zero_stage: int):
    from planner.deepspeed_config import deepspeed_config
    from planner.spec import ParallelPlan

    plan = ParallelPlan(
        nodes=1, gpus_per_node=1, zero_stage=zero_stage, micro_batch=2, grad_accum=1, grad_ckpt=False
    )
    return census.engine_step_census(m, micro_batch=2, ds_config=deepspeed_config(plan, grad_clip=5.0))


@pytest.mark.train
def test_deepspeed_zero0_wrapper_ops_per_tensor(one_rank: None) -> None:
    """The real DeepSpeed engine (ZeRO-0, bf16, torch AdamW with foreach as on CUDA) on one CPU
    rank: its step runs DS_UNFUSED_OPS_PER_TENSOR ops per parameter tensor besides AdamW's own
    (foreach: a fixed handful; its per-tensor step counters live on the CPU), moving 28 + 4a bytes
    per parameter besides AdamW's."""
    r = _engine_step(prof.load_model("eva-clip-debug"), 0)
    assert r.optimizer == "FP16_UnfusedOptimizer"
    step = r.step
    foreach = {n: rec for n, rec in step.ops.items() if n.startswith("_foreach_")}
    # AdamW's per-tensor step counters (CPU scalars, `state_steps` += 1) are host-only adds.
    counters = step.ops["add_"].count
    assert counters == r.param_tensors - 1 or counters == r.param_tensors
    wrapper_ops = step.count() - sum(rec.count for rec in foreach.values()) - counters
    assert wrapper_ops == pytest.approx(ops.DS_UNFUSED_OPS_PER_TENSOR * r.param_tensors, abs=2)
    wrapper_bytes = step.bytes() - sum(rec.bytes for rec in foreach.values()) - step.ops["add_"].bytes
    assert wrapper_bytes == pytest.approx(ops.ds_unfused_bytes_per_param("bf16") * r.params, rel=0.01)


@pytest.mark.train
@pytest.mark.parametrize("zero_stage", [1, 2])
def test_deepspeed_zero12_step_ops_per_gradient_tensor(one_rank: None, zero_stage: int) -> None:
    """ZeRO-1/2 (DeepSpeedZeroOptimizer, bf16, clipping) on one CPU rank: each parameter tensor more
    adds DS_ZERO12_OPS_PER_PARTITION_TENSOR ops to the step (its overflow check and norm; the
    optimizer itself steps one flat partition), read as the difference between the debug model and
    the same model with one text layer more. A world of one holds every tensor in its partition."""
    m = prof.load_model("eva-clip-debug")
    small = _engine_step(m, zero_stage)
    big = _engine_step(census._with_depths(m, None, m.text.layers + 1), zero_stage)
    assert small.optimizer == big.optimizer == "DeepSpeedZeroOptimizer"
    added_tensors = big.param_tensors - small.param_tensors
    assert added_tensors > 0
    per_tensor = (big.step.count() - small.step.count()) / added_tensors
    assert per_tensor == ops.DS_ZERO12_OPS_PER_PARTITION_TENSOR


def test_host_calls_per_kernel_is_the_census_of_the_eva02_b16_block() -> None:
    """HOST_S_PER_KERNEL's eager figure is 7 µs per Python-level torch call × the calls per kernel of
    the real block's forward (issue 21 item 1): pinned to the census, and the text block's ratio
    is close to it (the one ratio serves both towers)."""
    m = prof.load_model("eva02-clip-b16")
    calls, kernels = census.forward_calls_per_kernel(m, "vision")
    assert calls / kernels == ops.HOST_CALLS_PER_KERNEL
    t_calls, t_kernels = census.forward_calls_per_kernel(m, "text")
    assert 1.5 <= t_calls / t_kernels <= 2.0
    assert ops.HOST_S_PER_KERNEL["eager"] == ops.HOST_S_PER_TORCH_CALL * calls / kernels


def test_torch_adamw_step_bytes_and_ops_per_tensor() -> None:
    """planner/ops.py's AdamW bytes per parameter by implementation, against torch's own step on the CPU.
    This torch's single-tensor loop (foreach=False) moves 84 bytes per fp32 parameter in 10 ATen ops per
    tensor (8 kernels, the step counter's add_ and its .item()), the foreach step's figure; torch ≤ 1.13
    wrote the first moment's update as mul_ then add_ where lerp_ stands now: one op and 8 bytes more
    (ADAMW_BYTES_PER_PARAM_BY_IMPL["single_tensor"], SINGLE_TENSOR_ADAMW_OPS_PER_TENSOR). The foreach
    ops return nothing, so the census would miss their writes: the single-tensor step is the one counted."""
    n, tensors = 100_000, 4
    params = [torch.nn.Parameter(torch.randn(n)) for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn(n)
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, foreach=False)
    opt.step()  # the states exist from here on
    c = census.Census()
    with census._make_mode(c):
        opt.step()
    per_param = c.bytes() / (n * tensors)
    assert per_param == pytest.approx(ops.ADAMW_BYTES_PER_PARAM_BY_IMPL["foreach"], rel=1e-4)
    assert (
        ops.ADAMW_BYTES_PER_PARAM_BY_IMPL["single_tensor"] == ops.ADAMW_BYTES_PER_PARAM_BY_IMPL["foreach"] + 8
    )
    assert (c.count() + c.syncs) / tensors == ops.SINGLE_TENSOR_ADAMW_OPS_PER_TENSOR - 1
    assert c.ops["lerp_"].count == tensors
