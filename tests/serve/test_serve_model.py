"""planner.serve: the serving time model, memory and TP, the setting for a latency target, cost per
million, fleets, the Pareto front and hybrid routing — each checked against its own formula."""

from __future__ import annotations

import math

import pytest

from planner import compute, ops
from planner import profiles as prof
from planner.errors import InfeasibleError
from planner.inference_time import inference_flops_per_sample
from planner.params import count_params
from planner.serve import (
    GIB,
    WEIGHT_BYTES,
    blended_gpu_s,
    choose_setting,
    inference_batch_time_s,
    mark_pareto,
    max_batch_that_fits,
    replica_memory,
    route,
    serve_point,
    share_for_speedup,
    tp_choices,
)
from planner.spec import Sourced


def _hw(name: str = "h100-sxm", **update):
    return prof.load_hardware(name).model_copy(update=update)


def _gib(hw, gib: float):
    return hw.model_copy(update={"hbm_gib": Sourced(value=gib, source="test", observed=hw.hbm_gib.observed)})


def test_batch_time_grows_with_batch_and_per_image_time_falls():
    m, hw = prof.load_model("eva02-clip-b16"), _hw()
    ts = [inference_batch_time_s(m, hw, "image", b, "bf16").total_s for b in (1, 2, 8, 64, 512)]
    assert ts == sorted(ts)
    per = [t / b for t, b in zip(ts, (1, 2, 8, 64, 512), strict=True)]
    assert per == sorted(per, reverse=True)


def test_tensor_parallel_when_one_gpu_cannot_hold_the_weights():
    m = prof.load_model("eva-clip-18b")
    hw = _gib(_hw(), 24.0)  # 18B bf16 weights are 34 GiB
    assert max_batch_that_fits(m, hw, "bf16", 1) == 0
    s = choose_setting(m, hw, "bf16", 8, None)
    assert s.tp == 2
    mem = replica_memory(m, hw, 8, "bf16", 2)
    assert mem.fits
    assert mem.weights_bytes == pytest.approx(count_params(m).total * 2 / 2)
    t = inference_batch_time_s(m, hw, "image", 8, "bf16", 2)
    blocks = m.vision.depth
    assert t.tp_comm_s > 0
    # 2 all-reduces per block, each at least the ring bytes over the bus bandwidth
    msg = 8 * m.vision.seq_len * m.vision.width * 2
    bw = hw.collective.intra_node_allreduce_gbps.value * 1e9
    assert t.tp_comm_s >= blocks * 2 * (2 * 1 / 2) * msg / bw
    # TP sizes split both towers' heads: 18B vision 40 heads, text 20 heads → 1, 2, 4 on 8 GPUs
    assert tp_choices(m, hw) == [1, 2, 4]


def test_max_batch_that_fits_is_the_memory_boundary():
    m, hw = prof.load_model("eva-clip-8b"), _hw()
    b = max_batch_that_fits(m, hw, "bf16", 1)
    assert b > 1
    assert replica_memory(m, hw, b, "bf16", 1).fits
    assert not replica_memory(m, hw, b + 1, "bf16", 1).fits


@pytest.mark.parametrize("p99_ms", [20.0, 50.0, 200.0])
def test_p99_setting_is_the_largest_batch_that_meets_it(p99_ms):
    m, hw = prof.load_model("eva02-clip-e14-plus"), _hw()
    s = choose_setting(m, hw, "bf16", None, p99_ms)
    assert inference_batch_time_s(m, hw, "image", s.batch, "bf16", s.tp).total_s <= p99_ms / 1e3
    over = inference_batch_time_s(m, hw, "image", s.batch + 1, "bf16", s.tp).total_s > p99_ms / 1e3
    assert over or s.batch == max_batch_that_fits(m, hw, "bf16", s.tp)
    rate = s.batch / inference_batch_time_s(m, hw, "image", s.batch, "bf16", s.tp).total_s / s.tp
    for t in tp_choices(m, hw):  # no other TP does better per GPU within the target
        for bb in (1, 2, 4, 8, 16, 32, 64, 128):
            tt = inference_batch_time_s(m, hw, "image", bb, "bf16", t).total_s
            if tt <= p99_ms / 1e3 and replica_memory(m, hw, bb, "bf16", t).fits:
                assert bb / tt / t <= rate * (1 + 1e-9)


def test_infeasible_requests_name_the_nearest_setting():
    m, hw = prof.load_model("eva-clip-18b"), _hw()
    with pytest.raises(InfeasibleError, match=r"largest batch that fits is --batch \d+"):
        choose_setting(m, hw, "bf16", 60000, None)
    with pytest.raises(InfeasibleError, match=r"fastest is batch 1 at TP \d: [\d.]+ ms; use --p99-ms"):
        choose_setting(m, hw, "bf16", None, 1.0)
    with pytest.raises(InfeasibleError, match=r"--batch \d+ meets it"):
        choose_setting(m, hw, "bf16", 256, 100.0)
    with pytest.raises(InfeasibleError, match="use --precision bf16"):
        choose_setting(m, prof.load_hardware("a100-80gb"), "fp8", None, None)
    with pytest.raises(InfeasibleError, match="does not fit even at batch 1"):
        choose_setting(m, prof.load_hardware("cpu"), "bf16", None, None)


def test_cost_energy_and_fleet_follow_from_throughput():
    m, hw, off = prof.load_model("eva02-clip-l14"), _hw(), prof.load_offering("aws-p5")
    p = serve_point(m, hw, off, batch=64, rps=10_000)
    assert p.images_per_s_per_gpu == pytest.approx(64 / p.image.total_s)
    assert p.gpu_hours_per_m_images == pytest.approx(1e6 / p.images_per_s_per_gpu / 3600)
    od = next(x for x in p.prices if x.pricing == "on_demand")
    assert od.usd_per_gpu_hour == pytest.approx(off.on_demand_usd_per_node_hour.value / 8)
    assert od.usd_per_m_images == pytest.approx(p.gpu_hours_per_m_images * od.usd_per_gpu_hour)
    assert od.usd_per_m_texts == pytest.approx(1e6 / p.texts_per_s_per_gpu / 3600 * od.usd_per_gpu_hour)
    assert {x.pricing for x in p.prices} == {"on_demand", "spot", "committed"}
    assert p.kwh_per_m_images == pytest.approx(
        p.gpu_hours_per_m_images * hw.node_power_kw.value / 8 * off.pue.value
    )
    f = p.fleet
    per_replica = 64 / p.image.total_s
    assert f.replicas == math.ceil(10_000 / per_replica)
    assert f.gpus == f.replicas * p.tp and f.nodes == math.ceil(f.gpus / 8)
    assert p.imagenet_top1 == 79.8


def test_pareto_front_drops_dominated_models():
    hw, off = _hw(), prof.load_offering("aws-p5")
    pts = mark_pareto(
        [
            serve_point(prof.load_model(n), hw, off, batch=32)
            for n in ("eva02-clip-l14", "eva01-clip-g14", "eva-clip-18b")
        ]
    )
    on = {p.model: p.pareto for p in pts}
    # g/14 costs more than L/14 per image and scores lower (78.5 vs 79.8): dominated.
    assert on == {"eva02-clip-l14": True, "eva01-clip-g14": False, "eva-clip-18b": True}


@pytest.mark.parametrize("mode", ["cascade", "split"])
def test_routing_blends_gpu_time_and_inverts(mode):
    hw, off = _hw(), prof.load_offering("aws-p5")
    small = serve_point(prof.load_model("eva02-clip-b16"), hw, off, batch=32)
    large = serve_point(prof.load_model("eva-clip-18b"), hw, off, batch=32)
    r0 = route(small, large, 0.0, mode)
    assert r0.speedup_vs_large == pytest.approx(r0.cost_ratio)
    r1 = route(small, large, 1.0, mode)
    expect_all = (r1.small_gpu_s + r1.large_gpu_s) if mode == "cascade" else r1.large_gpu_s
    assert r1.blended_gpu_s == pytest.approx(expect_all)
    for x in (7.0, 8.0):
        p = share_for_speedup(r0.small_gpu_s, r0.large_gpu_s, x, mode)
        assert p is not None and 0 < p < 1
        assert r0.large_gpu_s / blended_gpu_s(r0.small_gpu_s, r0.large_gpu_s, p, mode) == pytest.approx(x)
    # a speedup beyond the cost ratio cannot be had at any share
    assert share_for_speedup(r0.small_gpu_s, r0.large_gpu_s, 2 * r0.cost_ratio, mode) is None


def test_memory_terms_add_up():
    m, hw = prof.load_model("eva02-clip-b16"), _hw()
    mem = replica_memory(m, hw, 100, "int8", 1)
    assert mem.total_bytes == pytest.approx(mem.weights_bytes + mem.activations_bytes + mem.reserved_bytes)
    assert mem.weights_bytes == count_params(m).total * WEIGHT_BYTES["int8"]
    assert mem.reserved_bytes == hw.memory_reserved_gib.value * GIB


def test_int8_runs_at_the_fp8_rate_with_one_byte_weights():
    m, hw = prof.load_model("eva02-clip-b16"), _hw()
    f8, i8 = (inference_batch_time_s(m, hw, "text", 256, p) for p in ("fp8", "int8"))
    assert i8 == f8
    assert replica_memory(m, hw, 1, "int8", 1).weights_bytes == count_params(m).total


# EVA models only: other families (OpenCLIP profiles) cite their own model cards.
@pytest.mark.parametrize("name", [n for n in prof.index("models") if n.startswith("eva")])
def test_every_published_eva_model_carries_its_accuracy_and_a_public_source(name):
    m = prof.load_model(name)
    if m.debug:
        assert m.published is None or m.published.imagenet_zero_shot_top1 is None
        return
    pub = m.published
    assert pub is not None and pub.imagenet_zero_shot_top1 is not None
    assert 70 < pub.imagenet_zero_shot_top1 < 90
    assert pub.accuracy_source and "https://github.com/baaivision/EVA" in pub.accuracy_source
    if pub.zero_shot_avg27_top1 is not None:
        assert "2402.04252" in pub.accuracy_source


def test_serving_prices_its_operations_with_the_training_models_functions(monkeypatch):
    """One time model (issue 21 item 1): serving's GEMMs, attention and host time are planner/ops.py's
    own functions, not a copy: replacing them there changes serving's figures."""
    m, hw = prof.load_model("eva02-clip-b16"), _hw()
    monkeypatch.setattr(ops, "gemm_time_s", lambda *a, **k: 1.0)
    monkeypatch.setattr(ops, "attention_time_s", lambda *a, **k: 10.0)
    monkeypatch.setitem(ops.HOST_S_PER_KERNEL, "eager", 1.0)
    t = inference_batch_time_s(m, hw, "image", 8, "bf16")
    # q, k, v, proj, SwiGLU w1, w2, w3 per block, + the patch embedding and the head
    assert t.gemm_s == m.vision.depth * 7 + 2
    assert t.attention_s == m.vision.depth * 10.0
    assert t.host_s == t.kernels


def test_the_compute_scale_scales_serving_as_it_scales_training():
    m, hw = prof.load_model("eva02-clip-l14"), _hw()
    slow = hw.model_copy(update={"compute_scale": Sourced(value=0.5, source="test", observed="2026-11-30")})
    a, b = (inference_batch_time_s(m, h, "image", 256, "bf16") for h in (hw, slow))
    assert b.device_s == pytest.approx(2 * a.device_s)
    kw = {"micro_batch": 64, "image_size": 224, "patch_dropout": 0.0, "grad_ckpt": False}
    kw |= {"contrast_batch": 64, "loss_rows": 64}
    tr = [ops.microbatch_time(m, h, **kw).device_s for h in (hw, slow)]
    assert float(tr[1]) == pytest.approx(2 * float(tr[0]))


@pytest.mark.parametrize("hardware", ["h100-sxm", "cpu"])
def test_batch_time_adds_up_its_operations(hardware):
    m, hw = prof.load_model("eva02-clip-b16"), _hw(hardware)
    t = inference_batch_time_s(m, hw, "image", 8, "bf16")
    assert t.device_s == pytest.approx(t.gemm_s + t.attention_s + t.memory_s)
    assert t.host_s == pytest.approx(t.kernels * ops.HOST_S_PER_KERNEL["eager"])
    # a GPU runs ahead of its host; a CPU does both
    busy = t.device_s + t.host_s if hw.vendor == "cpu" else max(t.device_s, t.host_s)
    assert t.total_s == pytest.approx(busy + t.tp_comm_s)
    ew = ops.block_elementwise(compute.vision_shape(m), m.vision.norm, "eager", "bf16", False)
    assert t.kernels == m.vision.depth * (4 + 3 + 1 + ew.kernels) + 5  # sub-LN q/k/v/proj, SwiGLU


def test_weights_stream_at_the_serving_precision():
    m = prof.load_model("eva-clip-18b")
    slow = _hw(hbm_achieved_tbps=Sourced(value=0.5, source="test", observed="2026-11-30"))
    bf, f8 = (inference_batch_time_s(m, slow, "image", 1, p) for p in ("bf16", "fp8"))
    # every weight is read once per forward: the GEMMs take at least the weights over the bandwidth
    assert bf.gemm_s >= 0.95 * count_params(m).vision * 2 / 0.5e12
    assert f8.gemm_s >= 0.95 * count_params(m).vision * 1 / 0.5e12
    assert f8.gemm_s < 0.7 * bf.gemm_s


def test_fp8_gemms_run_at_the_ratio_of_peaks_when_compute_bound():
    m, hw = prof.load_model("eva02-clip-l14"), _hw()
    bf, f8 = (inference_batch_time_s(m, hw, "image", 512, p) for p in ("bf16", "fp8"))
    ratio = hw.fp8_dense_tflops.value / hw.bf16_dense_tflops.value
    assert bf.gemm_s / f8.gemm_s == pytest.approx(ratio, rel=0.02)
    assert bf.attention_s == f8.attention_s  # attention stays 16-bit
    mb, m8 = (replica_memory(m, hw, 64, p, 1) for p in ("bf16", "fp8"))
    assert mb.weights_bytes == pytest.approx(2 * m8.weights_bytes)
    assert mb.activations_bytes == m8.activations_bytes


def test_text_tower_is_causal_and_uses_its_own_shape():
    m, hw = prof.load_model("eva-clip-18b"), _hw()
    t = inference_batch_time_s(m, hw, "text", 100, "bf16")
    assert t.flops == pytest.approx(100 * inference_flops_per_sample(m, "text"))
    math_kernel = inference_batch_time_s(m, hw, "text", 100, "bf16", attention="math")
    assert math_kernel.attention_s > t.attention_s  # the score matrix goes through HBM


@pytest.mark.parametrize("stack", ["compile", "fused"])
def test_fused_stacks_issue_fewer_kernels(stack):
    m, hw = prof.load_model("eva02-clip-b16"), _hw()
    eager = inference_batch_time_s(m, hw, "image", 8, "bf16")
    other = inference_batch_time_s(m, hw, "image", 8, "bf16", stack=stack)
    assert other.kernels < eager.kernels and other.memory_s < eager.memory_s


def test_a_flat_mfu_override_replaces_the_device_time():
    from planner.spec import SourcedFraction

    m = prof.load_model("eva02-clip-l14")
    hw = _hw(mfu_default=SourcedFraction(value=0.4, source="test", observed="2026-11-30"))
    t = inference_batch_time_s(m, hw, "image", 64, "bf16")
    assert t.device_s == pytest.approx(t.flops / (hw.bf16_dense_tflops.value * 1e12 * 0.4))


def test_math_kernel_holds_its_score_matrices_at_inference():
    """Serving memory follows the kernel (issue 26): the math path's s² score matrices of one layer
    are live at once, a fused kernel has none; so the largest batch that fits is smaller under math."""
    m, hw = prof.load_model("openclip-vit-l14"), _hw()
    flash = replica_memory(m, hw, 256, "bf16", 1, "flash")
    math_ = replica_memory(m, hw, 256, "bf16", 1, "math", "eager")
    v = m.vision
    s = v.seq_len
    # The image batch is the larger one; its attention working set (4h per token) + the scores.
    scores = 256 * 12.0 * v.heads * s * s
    attn = 256 * 4 * v.width * s * 2.0
    mlp = 256 * 2 * v.mlp_hidden * s * 2.0
    assert math_.activations_bytes - flash.activations_bytes == pytest.approx(attn + scores - max(attn, mlp))
    assert replica_memory(m, hw, 256, "bf16", 1, "mem_efficient").total_bytes == flash.total_bytes
    assert max_batch_that_fits(m, hw, "bf16", 1, attention="math", stack="eager") < max_batch_that_fits(
        m, hw, "bf16", 1
    )
    assert (
        serve_point(m, hw, None, batch=64, attention="math").memory.activations_bytes
        > serve_point(m, hw, None, batch=64).memory.activations_bytes
    )
