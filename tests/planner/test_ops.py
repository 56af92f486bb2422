"""The per-operation time model (planner/ops.py): each term against its formula and its physics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner import ops
from planner import profiles as prof
from planner.compute import forward_flops_per_sample, text_shape, train_flops_per_sample, vision_shape
from planner.errors import InfeasibleError
from planner.estimate import estimate
from planner.memory import TowerShape, vision_tokens
from planner.spec import ParallelPlan, SourcedFraction, TrainingSpec

HARDWARE = sorted(prof.index("hardware"))


@pytest.mark.parametrize("name", HARDWARE)
def test_gemm_rate_is_monotone_bounded_by_peak_and_through_the_measurement(name: str) -> None:
    hw = prof.load_hardware(name)
    peak = hw.bf16_dense_tflops.value * 1e12
    sizes = np.array([1.0, 16, 64, 256, 768, 1024, 4096, 16384, 65536, 262144])
    for other in (64.0, 1024.0, 8192.0):
        for axis in range(3):
            dims = [np.full_like(sizes, other) for _ in range(3)]
            dims[axis] = sizes
            rate = ops.gemm_rate_flops(hw, *dims)
            assert np.all(np.diff(rate) >= 0), (name, axis, other)
            assert np.all(rate <= peak) and np.all(rate > 0)
            t = ops.gemm_time_s(hw, *dims)
            achieved = 2.0 * dims[0] * dims[1] * dims[2] / t
            assert np.all(achieved <= peak * (1 + 1e-12))
    mm = hw.matmul
    at_measured = ops.gemm_rate_flops(hw, float(mm.m), float(mm.n), float(mm.k))
    assert at_measured == pytest.approx(min(mm.tflops.value * 1e12, peak), rel=1e-12)


def test_gemm_shape_effects_by_hand() -> None:
    hw = prof.load_hardware("h100-sxm")
    mm = hw.matmul
    u = ops.gemm_utilisation(hw, 4096.0, 4096.0, 768.0)
    work = 4096 * 4096 / (mm.tile_m * mm.tile_n) * (768 / ops.GEMM_K_STEP)
    assert u == pytest.approx(work / (work + mm.compute_units.value / 2) * 768 / (768 + mm.k_overhead))
    # A GEMM with K = 16 moves more bytes than it computes: the HBM roofline prices it.
    m, n, k = 65536.0, 4096.0, 16.0
    t = ops.gemm_time_s(hw, m, n, k)
    assert t == pytest.approx(2.0 * (m * k + k * n + m * n) / (hw.hbm_achieved_tbps.value * 1e12))
    # A calibration's compute_scale speeds every part up by the same factor.
    assert ops.gemm_time_s(hw, m, n, k, scale=2.0) == pytest.approx(t / 2)


def test_same_compute_die_same_gemms_faster_memory_faster_memory_bound_work() -> None:
    h100, h200 = prof.load_hardware("h100-sxm"), prof.load_hardware("h200")
    big = (65536.0, 8192.0, 8192.0)
    assert ops.gemm_time_s(h100, *big) == ops.gemm_time_s(h200, *big)
    assert h200.hbm_achieved_tbps.value / h100.hbm_achieved_tbps.value == pytest.approx(4.8 / 3.35, rel=2e-3)
    m = prof.load_model("eva02-clip-b16")
    kw = dict(
        micro_batch=256,
        image_size=224,
        patch_dropout=0.0,
        grad_ckpt=False,
        contrast_batch=2048,
        loss_rows=256,
    )
    a, b = ops.microbatch_time(m, h100, **kw), ops.microbatch_time(m, h200, **kw)
    assert b.gemm_s == pytest.approx(a.gemm_s, rel=0.02)  # only memory-bound GEMMs differ
    ratio = h100.hbm_achieved_tbps.value / h200.hbm_achieved_tbps.value
    assert b.memory_s == pytest.approx(a.memory_s * ratio, rel=1e-9)
    assert b.total_s < a.total_s
    mi300, mi325 = prof.load_hardware("mi300x"), prof.load_hardware("mi325x")
    assert ops.microbatch_time(m, mi325, **kw).total_s < ops.microbatch_time(m, mi300, **kw).total_s


@pytest.mark.parametrize(("seq", "head_dim"), [(77, 64), (257, 64), (1025, 128), (4096, 128)])
def test_attention_kernels_in_order(seq: int, head_dim: int) -> None:
    hw = prof.load_hardware("h100-sxm")
    rows = 64.0 * seq
    t = {
        k: ops.attention_time_s(hw, k, rows, float(seq), 16, head_dim, 1.0, False, "bf16", 1.0)
        for k in ops.ATTENTION_KERNELS
    }
    # H100 measures cuDNN's fused kernel faster than FlashAttention-2 (benchmarks/results).
    assert t["cudnn"] <= t["flash"] <= t["mem_efficient"]
    assert t["flash"] <= t["math"]
    if 128 < seq <= 257:
        # Near the measured shape (197 tokens) the score matrix's fp32 traffic makes `math` the slowest;
        # at 77 tokens two small batched GEMMs can beat the memory-efficient kernel. (At long sequences
        # the model prices math's GEMMs at the tensor-core rate, which is optimistic: docs/planner-model.md.)
        assert t["mem_efficient"] <= t["math"]


def test_attention_rates_by_hand() -> None:
    hw = prof.load_hardware("h100-sxm")
    at = hw.attention
    # At the measured shape the forward runs at the measured rate (here compute-bound).
    seq, d, heads, seqs = float(at.seq), at.head_dim, 12, 256.0
    fwd_flops = seqs * heads * 4 * seq * seq * d
    rate = at.flash_fwd_tflops.value * 1e12
    assert ops.attention_fwd_rate_flops(hw, "flash", seq, d, "bf16") == pytest.approx(rate, rel=1e-12)
    assert ops.attention_fwd_rate_flops(hw, "cudnn", seq, d, "bf16") == pytest.approx(183.6e12, rel=1e-12)
    want = fwd_flops / rate + 2.5 * fwd_flops / (rate * ops.FLASH_BWD_OVER_FWD)
    got = ops.attention_time_s(hw, "flash", seqs * seq, seq, heads, d, 1.0, False, "bf16", 1.0)
    assert got == pytest.approx(want, rel=1e-12)
    # A recompute adds one forward; longer sequences and larger heads run faster per FLOP.
    again = ops.attention_time_s(hw, "flash", seqs * seq, seq, heads, d, 2.0, False, "bf16", 1.0)
    assert again == pytest.approx(got + fwd_flops / rate, rel=1e-12)
    r = [
        ops.attention_fwd_rate_flops(hw, "flash", s_, d_, "bf16")
        for s_, d_ in ((77, 64), (197, 64), (1025, 64), (1025, 128))
    ]
    assert r[0] < r[1] < r[2] < r[3] <= hw.bf16_dense_tflops.value * 1e12
    # Causal skips the masked half of a long, compute-bound sequence.
    long = 8192.0
    full = ops.attention_time_s(hw, "flash", 8 * long, long, 16, 128, 1.0, False, "bf16", 1.0)
    causal = ops.attention_time_s(hw, "flash", 8 * long, long, 16, 128, 1.0, True, "bf16", 1.0)
    assert causal == pytest.approx(full / 2, rel=1e-12)
    # Unmeasured kernels: memory-efficient at half of flash (a100-80gb measures only flash).
    a100 = prof.load_hardware("a100-80gb")
    assert ops.attention_fwd_rate_flops(a100, "mem_efficient", 512.0, 64, "bf16") == pytest.approx(
        0.5 * ops.attention_fwd_rate_flops(a100, "flash", 512.0, 64, "bf16"), rel=1e-12
    )
    with pytest.raises(InfeasibleError, match="unknown attention kernel"):
        ops.attention_time_s(hw, "xformers", 1.0, 1.0, 1, 64, 1.0, False, "bf16", 1.0)
    # cuDNN is NVIDIA's: an AMD GPU or the CPU refuses it instead of pricing it at their flash rate.
    for other in ("mi300x", "cpu"):
        with pytest.raises(InfeasibleError, match="runs on NVIDIA GPUs only"):
            ops.attention_fwd_rate_flops(prof.load_hardware(other), "cudnn", 197.0, 64, "bf16")


def test_cudnn_on_amd_is_one_line_and_exit_2(cli) -> None:
    r = cli(
        "estimate", "--model", "eva02-clip-b16", "--hardware", "mi300x", "--gpus", "8", "--attention", "cudnn"
    )
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1 and "NVIDIA GPUs only" in r.output


def test_cudnn_over_mixed_vendors_leaves_the_amd_options_out(cli) -> None:
    """`compare` and `plan` over NVIDIA and AMD offerings with --attention cudnn rank the NVIDIA ones and
    say which were left out and why, in the table and the JSON; with only AMD ones, the one-line refusal."""
    base = ("--model", "openclip-vit-b16", "--gpus", "8", "--attention", "cudnn")
    offerings = ("--offering", "aws-p5", "azure-nd-mi300x-v5", "coreweave-h100")
    r = cli("compare", *base, *offerings)
    assert r.exit_code == 0, r.output
    assert (
        "left out: azure-nd-mi300x-v5 (on-demand): attention kernel 'cudnn' runs on NVIDIA GPUs only"
        in r.output
    )
    assert "coreweave-h100 (on-demand)" in r.output
    doc = json.loads(cli("compare", *base, *offerings, "--format", "json").output)
    assert [o["option"] for o in doc["options"]] == ["aws-p5", "coreweave-h100"]
    assert [(e["option"], e["label"]) for e in doc["excluded"]] == [
        ("azure-nd-mi300x-v5", "azure-nd-mi300x-v5 (on-demand)")
    ]
    r = cli("compare", *base, *offerings, "--baseline", "azure-nd-mi300x-v5")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "--baseline azure-nd-mi300x-v5 was left out: attention kernel 'cudnn'" in r.output
    r = cli("plan", *base, *offerings)
    assert r.exit_code == 0 and "options left out" in r.output and "NVIDIA GPUs only" in r.output
    plan_doc = json.loads(cli("plan", *base, *offerings, "--format", "json").output)
    assert plan_doc["excluded"] == doc["excluded"]
    # Without cuDNN nothing is left out, and the key is absent.
    assert "excluded" not in json.loads(cli("plan", *base[:-2], *offerings, "--format", "json").output)
    for cmd in ("compare", "plan"):
        r = cli(cmd, *base, "--offering", "azure-nd-mi300x-v5", "tensorwave-mi300x")
        assert r.exit_code == 2
        assert len(r.output.strip().splitlines()) == 1 and "NVIDIA GPUs only" in r.output


def test_elementwise_bytes_and_kernels_by_stack() -> None:
    """By hand for an OpenCLIP text block (h = 100, f = 300, bf16); tests/planner/test_op_census.py
    checks the same formulas against the real model's ATen ops."""
    t = TowerShape(layers=1, width=100, heads=1, mlp_hidden=300, swiglu=False, subln=False, rope=False)
    eager = ops.block_elementwise(t, "layernorm", "eager", "bf16", False, text=True)
    # Forward: 2 LayerNorms (2·2h + 8 bytes of fp32 row statistics each), GELU 2·2f, 2 residual adds 3·2h.
    assert eager.fwd_bytes_per_token == 2 * (4 * 100 + 8) + 4 * 300 + 2 * 6 * 100
    assert eager.fwd_kernels == 2 + 1 + 2
    # Backward: 2 LayerNorm backward (3·2h + 8), 4 bias reductions (2·(3h + h + f + h)), the q/k/v
    # gradients stacked and copied back to rows (2 × 2·2·3h), 2 residual adds (3·2h), GELU backward 3·2f.
    assert eager.bwd_bytes_per_token == 2 * (6 * 100 + 8) + 2 * (500 + 300) + 2 * 12 * 100 + 2 * 600 + 1800
    assert eager.bwd_kernels == 2 + 4 + 2 + 2 + 1
    # Under autocast: fp32 stream and LayerNorms (2·4h + 8, backward 3·4h + 8), the in_proj and c_fc
    # inputs cast to 16 bits (6h each way), residual adds reading 4 + 2 and writing 4, their backward
    # casting the branch gradient to 16 bits (6h) and adding in fp32 (12h).
    amp = ops.block_elementwise(t, "layernorm", "amp", "bf16", False, text=True)
    assert amp.fwd_bytes_per_token == 2 * (8 * 100 + 8) + 2 * 600 + 2 * 1000 + 4 * 300
    assert amp.fwd_kernels == eager.fwd_kernels + 2
    assert amp.bwd_bytes_per_token == (
        2 * (12 * 100 + 8) + 2 * 600 + 2 * (500 + 300) + 2 * 12 * 100 + 2 * (600 + 1200) + 1800
    )
    assert amp.bwd_kernels == eager.bwd_kernels + 2 + 2
    fused = ops.block_elementwise(t, "layernorm", "compile", "bf16", False)
    assert fused.fwd_bytes_per_token == 2 * 4 * 2 * 100 + 2 * 2 * 300
    assert fused.fwd_kernels == 3
    assert fused.bwd_bytes_per_token == ops.FUSED_BWD_RATIO * fused.fwd_bytes_per_token
    assert ops.block_elementwise(t, "layernorm", "fused", "bf16", False) == fused
    # fp32 doubles the activation bytes (not the fp32 row statistics).
    fp32 = ops.block_elementwise(t, "layernorm", "eager", "fp32", False, text=True)
    assert fp32.fwd_bytes_per_token == 2 * eager.fwd_bytes_per_token - 2 * 8
    rope = TowerShape(layers=1, width=100, heads=1, mlp_hidden=300, swiglu=True, subln=True, rope=True)
    e2, f2 = (ops.block_elementwise(rope, "layernorm", s, "bf16", True) for s in ("eager", "compile"))
    assert e2.fwd_bytes_per_token > 2 * f2.fwd_bytes_per_token and e2.fwd_kernels > 4 * f2.fwd_kernels
    with pytest.raises(InfeasibleError, match="unknown software stack"):
        ops.block_elementwise(t, "layernorm", "jax", "bf16", False)


def test_host_time_overlaps_on_a_gpu_and_adds_on_a_cpu() -> None:
    m = prof.load_model("eva-clip-debug")
    kw = dict(micro_batch=2, image_size=32, patch_dropout=0.0, grad_ckpt=False, contrast_batch=4, loss_rows=2)
    gpu = ops.microbatch_time(m, prof.load_hardware("h100-sxm"), **kw)
    assert gpu.host_s > gpu.device_s  # a tiny model on an H100 waits for Python
    assert gpu.total_s == gpu.host_s
    assert gpu.host_s == pytest.approx(gpu.kernels * ops.HOST_S_PER_KERNEL["eager"])
    cpu = ops.microbatch_time(m, prof.load_hardware("cpu"), **kw)
    assert cpu.total_s == cpu.device_s + cpu.host_s
    compiled = ops.microbatch_time(m, prof.load_hardware("h100-sxm"), stack="compile", **kw)
    assert compiled.kernels < gpu.kernels and compiled.host_s < gpu.host_s
    ckpt = ops.microbatch_time(m, prof.load_hardware("h100-sxm"), **{**kw, "grad_ckpt": True})
    assert ckpt.kernels > gpu.kernels


def test_precision_selects_the_peak() -> None:
    hw = prof.load_hardware("h100-sxm")
    assert ops.peak_tflops(hw, "bf16") == ops.peak_tflops(hw, "fp16") == 989
    assert ops.peak_tflops(hw, "fp32") == hw.tf32_dense_tflops.value == 494.5
    assert ops.matmul_tflops(hw, "fp32") == pytest.approx(794.5 * 494.5 / 989)
    b200 = prof.load_hardware("b200")
    assert b200.tf32_dense_tflops is None
    with pytest.raises(InfeasibleError, match="no tf32_dense_tflops"):
        ops.peak_tflops(b200, "fp32")
    # fp32 GEMMs run at the TF32 rate and move twice the bytes.
    big = (65536.0, 8192.0, 8192.0)
    assert ops.gemm_time_s(hw, *big, precision="fp32") == pytest.approx(
        2 * ops.gemm_time_s(hw, *big), rel=1e-12
    )


def test_step_bytes_by_optimizer_clipping_and_fp16() -> None:
    assert ops.step_bytes_per_param("adamw", False, "bf16") == 30
    assert ops.step_bytes_per_param("lamb", False, "bf16") == 42
    assert ops.step_bytes_per_param("adamw", True, "bf16") == 42
    assert ops.step_bytes_per_param("adamw", False, "fp16") == 30 + 4 + 8  # overflow check + unscale
    assert ops.step_bytes_per_param("adamw", True, "fp16") == 30 + 12 + 4  # unscale folded into clipping
    # GradScaler (amp: OpenCLIP): one fused check-and-unscale pass over the fp32 gradients either way
    assert ops.step_bytes_per_param("adamw", True, "fp16", "amp", "fused") == 30 + 12 + 8
    assert ops.step_bytes_per_param("adamw", False, "fp16", "amp", "fused") == 30 + 8
    assert ops.step_bytes_per_param("adamw", True, "bf16", "amp", "fused") == 42
    # amp's torch AdamW by implementation: foreach (torch ≥ 2.0's default, also when unstated) and
    # torch ≤ 1.13's single-tensor loop pass over memory once per operation (by hand in planner/ops.py;
    # test_op_census.py counts torch's own step).
    assert ops.step_bytes_per_param("adamw", False, "bf16", "amp") == 84
    assert ops.step_bytes_per_param("adamw", False, "bf16", "amp", "foreach") == 84
    assert ops.step_bytes_per_param("adamw", True, "fp16", "amp", "single_tensor") == 92 + 12 + 8
    # The other stacks step fused optimizers of their own, whatever optimizer_impl says.
    assert ops.step_bytes_per_param("adamw", False, "bf16", "eager", "single_tensor") == 30
    assert ops.step_bytes_per_param("lamb", False, "bf16", "amp", "single_tensor") == 42


def test_single_tensor_adamw_host_time_shows_under_fp16_only() -> None:
    """torch ≤ 1.13's per-tensor AdamW loop adds host time beyond its bytes only where GradScaler's
    found-inf check has made the host wait (fp16): per tensor max(0, 11 ops × 7 µs − bytes / HBM)."""
    hw = prof.load_hardware("a100-40gb")
    bw = float(ops.hbm_bytes_per_s(hw))
    numels = [768.0, 1e6, 1e8]  # a bias, a block weight, a tensor whose bytes outlast the host
    host = 11 * ops.HOST_S_PER_TORCH_CALL

    def term(precision: str, impl: str | None, stack: str = "amp", zero: int = 0, n: int = 8) -> float:
        return float(ops.torch_optimizer_loop_term(hw, numels, 92.0, zero, n, stack, precision, impl).value)

    expected = sum(max(0.0, host - 92.0 * x / bw) for x in numels)
    assert expected > 0 and term("fp16", "single_tensor") == pytest.approx(expected, rel=1e-12)
    assert 92.0 * 1e8 / bw > host  # the big tensor adds nothing: the device is the longer
    assert term("fp16", "single_tensor", zero=1) == pytest.approx(expected / 8, rel=1e-12)
    for precision, impl, stack in [
        ("bf16", "single_tensor", "amp"),  # no loss scaler: the host runs ahead of the backward
        ("fp16", "foreach", "amp"),
        ("fp16", None, "amp"),
        ("fp16", "fused", "amp"),
        ("fp16", "single_tensor", "eager"),  # DeepSpeed's own loops are priced apart
    ]:
        assert term(precision, impl, stack) == 0.0, (precision, impl, stack)
    hw = prof.load_hardware("h100-sxm")
    bw = hw.hbm_achieved_tbps.value * 1e12
    assert float(ops.optimizer_step_term(1e9, 8, 1, False, hw, 30.0).value) == pytest.approx(
        30 * 1e9 / 8 / bw
    )
    assert float(ops.optimizer_step_term(1e9, 8, 0, False, hw, 30.0).value) == pytest.approx(30 * 1e9 / bw)
    assert float(ops.optimizer_step_term(1e9, 8, 2, True, hw, 30.0).value) == 0.0
    v = ops.optimizer_step_term(
        1e9, np.array([8, 16]), np.array([0, 3]), np.array([False, False]), hw, 30.0
    ).value
    assert list(v) == [30 * 1e9 / bw, 30 * 1e9 / 16 / bw]


@pytest.mark.parametrize(
    ("model_name", "ckpt", "dropout"), [("eva02-clip-b16", False, 0.0), ("eva-clip-8b", True, 0.5)]
)
def test_gemm_flops_are_the_flop_model_minus_attention(model_name: str, ckpt: bool, dropout: float) -> None:
    """The GEMMs the time model prices execute exactly the FLOPs compute.py counts, apart from the
    attention matmuls (priced by kernel): the two models describe one computation."""
    m = prof.load_model(model_name)
    b, B = 32, 4096
    mb = ops.microbatch_time(
        m,
        prof.load_hardware("h100-sxm"),
        micro_batch=b,
        image_size=224,
        patch_dropout=dropout,
        grad_ckpt=ckpt,
        contrast_batch=B,
        loss_rows=b,
    )
    tf = train_flops_per_sample(forward_flops_per_sample(m, 224, dropout, B, 1.0), ckpt)
    s_v = float(vision_tokens((224 // m.vision.patch_size) ** 2, dropout))
    s_t = float(m.text.context_length)
    passes = 4.0 if ckpt else 3.0
    attn = passes * (
        m.vision.depth * 4 * s_v * s_v * m.vision.width + m.text.layers * 4 * s_t * s_t * m.text.width
    )
    assert float(mb.gemm_flops) == pytest.approx(b * (float(tf.hardware) - attn), rel=1e-12)
    assert vision_shape(m).layers == m.vision.depth and text_shape(m).layers == m.text.layers


@pytest.mark.parametrize("stack", ops.STACKS)
def test_arrays_and_scalars_agree(stack: str) -> None:
    m = prof.load_model("eva02-clip-l14")
    hw = prof.load_hardware("mi300x")
    mb = np.array([1, 8, 64, 256])
    ck = np.array([False, True, False, True])
    pd = np.array([0.0, 0.5, 0.25, 0.0])
    v = ops.microbatch_time(
        m,
        hw,
        micro_batch=mb,
        image_size=224,
        patch_dropout=pd,
        grad_ckpt=ck,
        contrast_batch=mb * 64,
        loss_rows=mb * 1.0,
        stack=stack,
    )
    for i in range(4):
        s = ops.microbatch_time(
            m,
            hw,
            micro_batch=int(mb[i]),
            image_size=224,
            patch_dropout=float(pd[i]),
            grad_ckpt=bool(ck[i]),
            contrast_batch=int(mb[i]) * 64,
            loss_rows=float(mb[i]),
            stack=stack,
        )
        assert float(v.total_s[i]) == float(s.total_s)


def _estimate(hw_name: str, **hw_update):
    m = prof.load_model("eva02-clip-b16")
    hw = prof.load_hardware(hw_name)
    if hw_update:
        hw = hw.model_copy(update=hw_update)
    plan = ParallelPlan(nodes=1, gpus_per_node=8, zero_stage=1, micro_batch=64, grad_accum=2, grad_ckpt=False)
    tr = TrainingSpec(samples=1e6, global_batch=1024, image_size=224, patch_dropout=0.0)
    return estimate(m, hw, plan, tr)


def test_mfu_is_an_output_and_mfu_default_an_override() -> None:
    e = _estimate("h100-sxm")
    c = e.compute
    assert 0 < c.mfu < c.gemm_efficiency < 1
    assert c.mfu == pytest.approx(c.model_flops_per_sample * 1024 / 8 / (c.step_s * 989e12))
    assert c.compute_s == pytest.approx(2 * max(c.gemm_s + c.attention_s + c.memory_bound_s, c.host_s))
    o = _estimate("h100-sxm", mfu_default=SourcedFraction(value=0.25, source="user", observed="2026-11-30"))
    want = o.compute.hardware_flops_per_sample * 64 * 2 / (989e12 * 0.25)
    assert o.compute.compute_s == pytest.approx(want, rel=1e-12)
    assert o.figure("time.compute_per_step").source == "user"


def test_a_measured_rate_above_its_datasheet_is_refused() -> None:
    from pydantic import ValidationError

    hw = prof.load_hardware("h100-sxm")
    data = hw.model_dump(mode="json")
    data["hbm_achieved_tbps"]["value"] = 4.0  # above the 3.35 TB/s datasheet
    with pytest.raises(ValidationError, match=r"hbm_achieved_tbps 4 is above hbm_tbps 3\.35"):
        type(hw).model_validate(data)
    data = hw.model_dump(mode="json")
    data["matmul"]["tflops"]["value"] = 1979  # the sparse figure taken for a dense one
    with pytest.raises(ValidationError, match=r"matmul\.tflops 1979 is above bf16_dense_tflops 989"):
        type(hw).model_validate(data)


def test_openclip_accumulation_adds_one_forward_without_gradients():
    """OpenCLIP's --accum-freq caches every micro-batch's features under no_grad first, then reruns
    each forward with gradients (open_clip PR #267): stack amp with accumulation pays one forward of
    both towers more per micro-batch; DeepSpeed (eager) and NeMo (fused) accumulate ordinarily."""
    m = prof.load_model("openclip-vit-l14")
    hw = prof.load_hardware("a100-80gb")
    assert ops.nograd_forwards_per_microbatch("amp", 2) == 1.0
    assert ops.nograd_forwards_per_microbatch("amp", 1) == 0.0
    assert ops.nograd_forwards_per_microbatch("eager", 4) == 0.0
    kw = {"micro_batch": 64, "image_size": 224, "patch_dropout": 0.0, "grad_ckpt": True}
    kw |= {"contrast_batch": 64, "loss_rows": 64, "stack": "amp", "precision": "bf16", "attention": "math"}
    plain = ops.microbatch_time(m, hw, **kw)
    accum = ops.microbatch_time(m, hw, **kw, nograd_forwards=1.0)
    fwd = ops.microbatch_time(m, hw, **{**kw, "grad_ckpt": False})
    # one forward more: more than nothing, less than a forward + backward without recompute
    assert 0 < float(accum.device_s - plain.device_s) < 0.5 * float(fwd.device_s)
    assert accum.kernels > plain.kernels
