"""Memory terms: DeepSpeed's own estimators agree to the byte; the rest pinned by hand arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from planner import profiles as prof
from planner.compute import text_shape, vision_shape
from planner.estimate import memory_report
from planner.memory import (
    ACTIVATION_MEMORY_FACTOR,
    MATH_SCORE_BYTES,
    MATH_UPCAST_QKV_BYTES_PER_WIDTH,
    TowerShape,
    attention_kernel_bytes,
    clip_loss_bytes,
    hpz_secondary_bytes,
    layer_bytes_per_token,
    math_path,
    tower_activation_bytes,
    vision_tokens,
    zero_buffer_bytes,
    zero_model_states,
)
from planner.params import count_params
from planner.spec import ParallelPlan, TrainingSpec

MODELS = ["eva-clip-debug", "eva02-clip-l14", "eva-clip-8b", "eva-clip-18b"]
CLUSTERS = [(1, 1), (8, 1), (8, 4), (8, 45), (4, 3)]  # (gpus_per_node, nodes)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("gpn,nodes", CLUSTERS)
def test_zero2_equals_deepspeed_estimator(name, gpn, nodes):
    z12 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
    psi = count_params(prof.load_model(name)).total
    for offload in (True, False):
        cpu, gpu = z12.estimate_zero2_model_states_mem_needs(psi, gpn, nodes, cpu_offload=offload)
        ms = zero_model_states(psi, 0, gpn, nodes, 2, offload, False)
        assert (float(ms.gpu_total), float(ms.host_per_node)) == (gpu, cpu)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("gpn,nodes", CLUSTERS)
def test_zero3_equals_deepspeed_estimator(name, gpn, nodes):
    z3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
    c = count_params(prof.load_model(name))
    for offload, offload_params in ((False, False), (True, False), (True, True)):
        cpu, gpu, largest = z3.estimate_zero3_model_states_mem_needs(
            c.total,
            c.largest_layer,
            gpn,
            nodes,
            cpu_offload=offload,
            cpu_offload_params=offload_params,
            zero_init=True,
        )
        ms = zero_model_states(c.total, c.largest_layer, gpn, nodes, 3, offload, offload_params)
        assert (float(ms.gpu_total), float(ms.host_per_node)) == (gpu, cpu)
        assert float(ms.zero3_largest_layer) == largest


def test_model_state_terms_by_hand():
    psi, n = 1_000_000, 8
    # ZeRO-1: 16-bit params and grads replicated (2Ψ + 2Ψ), fp32 grads/master/moments partitioned (16Ψ/N).
    z1 = zero_model_states(psi, 0, 8, 1, 1, False, False)
    assert float(z1.gpu_total) == 4 * psi + 16 * psi / n
    assert float(z1.optimizer_states_fp32) == 8 * psi / n
    # ZeRO-0 (DeepSpeed's bf16 optimizer): 2 + 2 + 4 + 4 + 8 = 20 bytes/param, nothing partitioned.
    assert float(zero_model_states(psi, 0, 8, 1, 0, False, False).gpu_total) == 20 * psi
    # ZeRO-3, no offload: 16-bit params 2Ψ/N, grads 2Ψ/N, master 4Ψ/N, moments 8Ψ/N = 16Ψ/N; DeepSpeed
    # budgets 18Ψ/N + 4·L, the 2Ψ/N difference shows as the estimator margin.
    z3 = zero_model_states(psi, 1000, 8, 1, 3, False, False)
    terms = [z3.params_16bit, z3.grads_16bit, z3.grads_fp32, z3.master_params_fp32, z3.optimizer_states_fp32]
    assert [float(t) for t in terms] == [2 * psi / n, 2 * psi / n, 0.0, 4 * psi / n, 8 * psi / n]
    assert float(z3.estimator_margin) == 2 * psi / n
    assert float(z3.gpu_total) == 4 * 1000 + 18 * psi / n
    # ZeRO-3 NVMe offload of optimizer and params: states on the drives (16Ψ/M + 2Ψ/M per node),
    # host RAM keeps the pinned swap buffers (2 × 5 × 1e8 × 2 bytes per GPU).
    zn = zero_model_states(psi, 1000, 8, 2, 3, True, True, nvme_optimizer=True, nvme_param=True)
    assert float(zn.nvme_per_node) == 18 * psi / 2
    assert float(zn.host_per_node) == pytest.approx(8 * 2e9, rel=1e-12)
    assert float(zn.gpu_total) == 4 * 1000


def test_activation_bytes_per_token_by_hand():
    # A plain pre-norm GELU block with f = 4h: Korthikanti's 34·h minus the two dropout masks = 32·h.
    gelu = TowerShape(layers=1, width=100, heads=4, mlp_hidden=400, swiglu=False, subln=False, rope=False)
    assert layer_bytes_per_token(gelu) == 32 * 100
    # EVA02 block (SwiGLU, sub-LN, RoPE): attention 12h + 4h (RoPE) + 2h (sub-LN); MLP 4h + 8f + 2f.
    eva02 = TowerShape(layers=1, width=64, heads=2, mlp_hidden=170, swiglu=True, subln=True, rope=True)
    assert layer_bytes_per_token(eva02) == 18 * 64 + 4 * 64 + 10 * 170
    # The attention kernel's bytes add per layer; recompute keeps 2·h·s per layer plus one layer's
    # working set (its scores included).
    s = 10.0
    math = float(attention_kernel_bytes("math", "eager", gelu, s))
    # eager math: fp32 probabilities 4·a·s² and the fp32 q, k, v copies' extra 6·h·s.
    assert math == 4 * 4 * s * s + 6 * 100 * s
    assert float(attention_kernel_bytes("math", "amp", gelu, s)) == 6 * 4 * s * s
    assert float(attention_kernel_bytes("math", "fused", gelu, s)) == 2 * 4 * s * s
    # Written out on a 16-bit model: the 16-bit probabilities only; under autocast, autocast's path.
    assert float(attention_kernel_bytes("explicit", "eager", gelu, s)) == 2 * 4 * s * s
    assert attention_kernel_bytes("explicit", "amp", gelu, s) == attention_kernel_bytes(
        "math", "amp", gelu, s
    )
    assert float(attention_kernel_bytes("flash", "eager", gelu, s)) == 4 * 4 * s
    assert float(attention_kernel_bytes("mem_efficient", "eager", gelu, s)) == 4 * 4 * 32
    assert float(tower_activation_bytes(gelu, s, False, math)) == s * 3200 + math
    t3 = TowerShape(layers=3, width=100, heads=4, mlp_hidden=400, swiglu=False, subln=False, rope=False)
    assert float(tower_activation_bytes(t3, s, True, math)) == 3 * 2 * 100 * s + s * 3200 + math
    assert float(tower_activation_bytes(t3, s, False, 0.0)) == 3 * s * 3200
    with pytest.raises(ValueError, match="xformers"):
        attention_kernel_bytes("xformers", "eager", gelu, s)


@pytest.mark.parametrize("stack", ["eager", "amp", "compile", "fused"])
@pytest.mark.parametrize("grad_ckpt", [False, True])
def test_activation_memory_by_kernel_math_over_mem_efficient_over_flash(stack, grad_ckpt):
    """The same layout keeps the most under the math path (the scores of every layer, or of the one
    layer being recomputed), then the memory-efficient kernel (its log-sum-exp padded to 32 rows),
    then flash; and the kernel moves both towers."""
    m, hw = prof.load_model("openclip-vit-l14"), prof.load_hardware("a100-80gb")
    plan = ParallelPlan(
        nodes=1, gpus_per_node=8, zero_stage=0, micro_batch=128, grad_accum=1, grad_ckpt=grad_ckpt
    )

    def report(kernel):
        training = TrainingSpec.from_recipe(m.recipe, global_batch=1024, stack=stack, attention=kernel)
        return memory_report(m, hw, plan, training)

    r = {k: report(k) for k in ("math", "mem_efficient", "flash", "cudnn")}
    for tower in ("activations_vision", "activations_text"):
        assert r["math"].gpu_terms[tower] > r["mem_efficient"].gpu_terms[tower] > r["flash"].gpu_terms[tower]
        assert r["cudnn"].gpu_terms[tower] == r["flash"].gpu_terms[tower]
    assert r["math"].gpu_total_bytes > r["mem_efficient"].gpu_total_bytes >= r["flash"].gpu_total_bytes
    # The math path's extra is its scores: 128 × 16 heads × 257² per layer at the stack's bytes (× the
    # fitted activation factor); 24 layers without recompute, one with.
    layers = 1 if grad_ckpt else 24
    extra = r["math"].gpu_terms["activations_vision"] - r["flash"].gpu_terms["activations_vision"]
    path = math_path("math", stack)
    per_layer = 128 * (
        MATH_SCORE_BYTES[path] * 16 * 257**2
        + MATH_UPCAST_QKV_BYTES_PER_WIDTH[path] * 1024 * 257
        - 4 * 16 * 257
    )
    assert extra == pytest.approx(layers * per_layer * ACTIVATION_MEMORY_FACTOR, rel=1e-12)


def test_vision_tokens_patch_dropout():
    # EVA PatchDropout keeps max(1, int(P·(1−r))) patches plus CLS: 256 patches at r=0.5 → 129 tokens.
    assert float(vision_tokens(256, 0.5)) == 129
    assert float(vision_tokens(256, 0.0)) == 257
    assert float(vision_tokens(1024, 0.5)) == 513  # 448px / 14


def test_clip_loss_and_buffers_by_hand():
    # local loss, b=4 on 2 GPUs (B=8), e=32: logits 2 × 2 × 4 B × 4 × 8 = 512; features 2 × 2 B × 8 × 32 × 2 = 2048.
    assert float(clip_loss_bytes(4, 2, 32, True, True)) == 512 + 2048
    # without local loss every GPU builds B × B: 16 × 8 × 8 = 1024.
    assert float(clip_loss_bytes(4, 2, 32, False, True)) == 1024 + 2048
    # 18B at B = 108,032: features alone 2 × 2 × 108,032 × 1536 × 2 ≈ 1.33 GB per GPU.
    assert float(clip_loss_bytes(1, 108_032, 1536, True, True)) == 16 * 108_032 + 8 * 108_032 * 1536
    # Stage 1/2: two full-size buckets with overlap_comm whatever the model's size (measured:
    # benchmarks/zero_buffers_cpu.py); stage 0/3 buckets never exceed the model.
    assert float(zero_buffer_bytes(1e6, 2, True, 0)) == 2 * 5e8 * 2
    assert float(zero_buffer_bytes(1e6, 1, False, 0)) == 5e8 * 2
    assert float(zero_buffer_bytes(1e6, 0, True, 0)) == 1e6 * 2
    assert float(zero_buffer_bytes(1e10, 2, True, 0)) == 2 * 5e8 * 2
    assert float(zero_buffer_bytes(1e10, 3, True, 1000)) == 5e8 * 2 + 5e7 * 2 + 2000
    assert float(hpz_secondary_bytes(8e9, 8)) == 2e9


def test_vectorised_equals_scalar():
    """The search evaluates arrays of candidates; each element equals the scalar call to the byte."""
    rng = np.random.default_rng(0)
    k = 64
    stage = rng.integers(0, 4, k)
    oo = rng.integers(0, 2, k).astype(bool) & (stage > 0)
    op = rng.integers(0, 2, k).astype(bool) & (stage == 3)
    nodes = rng.integers(1, 64, k)
    psi, L = 18_325_483_777, 131_097_600
    vec = zero_model_states(psi, L, 8, nodes, stage, oo, op)
    for i in range(k):
        sc = zero_model_states(psi, L, 8, int(nodes[i]), int(stage[i]), bool(oo[i]), bool(op[i]))
        assert float(vec.gpu_total[i]) == float(sc.gpu_total)
        assert float(vec.host_per_node[i]) == float(sc.host_per_node)
        assert float(vec.optimizer_states_fp32[i]) == float(sc.optimizer_states_fp32)
    m = prof.load_model("eva02-clip-l14")
    seq = vision_tokens(np.array([256, 576, 256]), np.array([0.0, 0.5, 0.25]))
    ck = np.array([True, False, True])
    vs = vision_shape(m)
    v = tower_activation_bytes(vs, seq, ck, attention_kernel_bytes("math", "eager", vs, seq))
    for i in range(3):
        s_i = float(seq[i])
        assert float(v[i]) == float(
            tower_activation_bytes(vs, s_i, bool(ck[i]), attention_kernel_bytes("math", "eager", vs, s_i))
        )
    assert float(tower_activation_bytes(text_shape(m), 77.0, True, 0.0)) > 0


def test_memory_report_sums_and_fit():
    m, hw = prof.load_model("eva-clip-18b"), prof.load_hardware("h100-sxm")
    plan = ParallelPlan(
        nodes=32, gpus_per_node=8, zero_stage=3, micro_batch=422, grad_accum=1, grad_ckpt=True
    )
    tr = TrainingSpec(samples=6e9, global_batch=108_032, image_size=224, patch_dropout=0.5)
    rep = memory_report(m, hw, plan, tr)
    assert rep.gpu_total_bytes == pytest.approx(sum(rep.gpu_terms.values()), rel=1e-12)
    states = [
        k
        for k in rep.gpu_terms
        if k
        in (
            "params_16bit",
            "grads_16bit",
            "grads_fp32",
            "master_params_fp32",
            "optimizer_states_fp32",
            "zero3_largest_layer",
            "deepspeed_estimator_margin",
        )
    ]
    assert sum(rep.gpu_terms[k] for k in states) == rep.model_states_bytes
    assert rep.fits_gpu and rep.gpu_headroom_bytes == rep.hbm_bytes - rep.gpu_total_bytes
    # Without checkpointing the same micro-batch does not fit in 80 GiB.
    no_ckpt = memory_report(m, hw, plan.model_copy(update={"grad_ckpt": False}), tr)
    assert not no_ckpt.fits_gpu
