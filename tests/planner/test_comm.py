"""Communication per optimizer step: hand arithmetic, DeepSpeed's measured behaviour, the seed's 1.3 TB."""

from __future__ import annotations

import numpy as np
import pytest

from planner import profiles as prof
from planner.comm import collective_bytes, collective_time_s, ring_latency_s, zero_collectives
from planner.params import count_params
from planner.spec import ParallelPlan


def _by_name(colls):
    return {c.name: c for c in colls}


# Measured with DeepSpeed 0.19.8's comms logger (prof_all) on 2 gloo ranks, bf16, evaplan's ZeRO
# settings, third optimizer step, for a model of Linear(512,1024) + Linear(1024,512) + Linear(512,64):
# Ψ = 1,082,944; two weights of 524,288 elements above the persistence threshold, 34,368 elements
# (biases, the 512×64 weight) under it. Logged sizes in bytes, count per step:
MEASURED = {
    (3, 1): {
        "all_gather_into_tensor": {1048576: 1, 1024: 1, 512: 1, 32768: 1, 64: 1},
        "reduce_scatter_tensor": {2165888: 1},
    },
    (3, 4): {
        "all_gather_into_tensor": {1048576: 4, 1024: 1, 512: 1, 32768: 1, 64: 1},
        "reduce_scatter_tensor": {2165888: 4},
    },
    (2, 1): {"all_reduce": {2165888: 1}, "all_gather_into_tensor": {1082944: 1}},
    (2, 4): {"all_reduce": {2165888: 4}, "all_gather_into_tensor": {1082944: 1}},
    (1, 1): {"all_reduce": {2165888: 1}, "all_gather_into_tensor": {1082944: 1}},
    (1, 4): {"all_reduce": {2165888: 1}, "all_gather_into_tensor": {1082944: 1}},
    (0, 1): {"all_reduce": {2165888: 1}},
    (0, 4): {"all_reduce": {2165888: 1}},
}
OP_OF = {
    "all_gather": "all_gather_into_tensor",
    "reduce_scatter": "reduce_scatter_tensor",
    "all_reduce": "all_reduce",
}


@pytest.mark.parametrize("stage,gas", sorted(MEASURED))
def test_matches_deepspeed_comms_logger(stage, gas):
    psi, gathered, persistent = 1_082_944, 2 * 524_288, 34_368
    colls = zero_collectives(
        psi=psi,
        gathered=gathered,
        persistent=persistent,
        regathered=0,
        gather_calls=1,
        regather_calls=0,
        world=2,
        gpus_per_node=2,
        zero_stage=stage,
        grad_accum=gas,
        micro_batch=4,
        embed_dim=64,
    )
    predicted: dict[str, float] = {}
    for c in colls:
        if c.ds_logged and float(c.logged_bytes):
            predicted[OP_OF[c.op]] = predicted.get(OP_OF[c.op], 0.0) + float(c.logged_bytes)
    measured = {
        op: sum(size * count for size, count in sizes.items()) for op, sizes in MEASURED[(stage, gas)].items()
    }
    assert predicted == pytest.approx(measured, rel=0.0, abs=0.5)


def test_debug_model_zero3_by_hand():
    m = prof.load_model("eva-clip-debug")
    psi = count_params(m).total
    plan = ParallelPlan(nodes=1, gpus_per_node=2, zero_stage=3, micro_batch=4, grad_accum=4, grad_ckpt=False)
    c = _by_name(collective_bytes(m, plan))
    # only the token embedding (49,408 × 32 = 1,581,056) exceeds the 1e5 persistence threshold;
    # gathered every micro-batch in forward, kept for backward (the tiny model is within the reuse distance).
    assert float(c["parameter all-gather (forward)"].message_bytes) == 1_581_056 * 2 * 4
    assert float(c["parameter all-gather (backward)"].message_bytes) == 0
    assert float(c["persistent-parameter all-gather"].message_bytes) == (psi - 1_581_056) * 2
    rs = c["gradient reduce-scatter"]
    assert float(rs.message_bytes) == psi * 2 * 4  # bf16, every micro-batch
    assert float(rs.ring_bytes_per_gpu) == psi * 2 * 4 / 2  # (n−1)/n of S on 2 ranks
    assert float(rs.inter_node_bytes_per_gpu) == 0  # one node
    # CLIP features: image + text, 4 samples × 2 GPUs × 32 × 2 bytes each, every micro-batch.
    assert float(c["CLIP feature all-gather"].message_bytes) == 2 * 4 * 2 * 32 * 2 * 4


def test_zero12_gradient_allreduce_grows_with_gas_only_in_stage2():
    psi = 1e9
    kw = dict(
        psi=psi,
        gathered=psi,
        persistent=0,
        regathered=0,
        gather_calls=1,
        regather_calls=0,
        world=16,
        gpus_per_node=8,
        grad_accum=8,
        micro_batch=1,
        embed_dim=512,
    )
    z1 = _by_name(zero_collectives(zero_stage=1, **kw))["gradient all-reduce"]
    z2 = _by_name(zero_collectives(zero_stage=2, **kw))["gradient all-reduce"]
    assert float(z1.message_bytes) == 2 * psi
    assert float(z2.message_bytes) == 2 * psi * 8
    # all-reduce ring: 2(n−1)/n · S; across 2 nodes 1/8 of it leaves the node.
    assert float(z2.ring_bytes_per_gpu) == 2 * 15 / 16 * 16e9
    assert float(z2.inter_node_bytes_per_gpu) == float(z2.ring_bytes_per_gpu) / 8


def test_zeropp_options():
    psi = 1e9
    kw = dict(
        psi=psi,
        gathered=psi,
        persistent=0,
        regathered=psi,
        gather_calls=10,
        regather_calls=10,
        world=64,
        gpus_per_node=8,
        zero_stage=3,
        grad_accum=1,
        micro_batch=1,
        embed_dim=512,
    )
    base = _by_name(zero_collectives(**kw))
    pp = _by_name(
        zero_collectives(hpz_partition_size=8, quantized_weights=True, quantized_gradients=True, **kw)
    )
    # qwZ halves the forward all-gather; hpZ keeps the backward all-gather inside a node; qgZ ¼ gradients.
    fwd = "parameter all-gather (forward)"
    assert float(pp[fwd].message_bytes) == 0.5 * float(base[fwd].message_bytes)
    bwd = pp["parameter all-gather (backward)"]
    assert int(bwd.group_size) == 8 and float(bwd.inter_node_bytes_per_gpu) == 0
    rs = "gradient reduce-scatter"
    assert float(pp[rs].message_bytes) == 0.25 * float(base[rs].message_bytes)


def test_seed_1_3_tb_per_step():
    """EVA-CLIP-18B, the published run's layout: 360 GPUs, 108,000 = 25 × 12 × 360, ZeRO-3."""
    m = prof.load_model("eva-clip-18b")
    plan = ParallelPlan(
        nodes=45, gpus_per_node=8, zero_stage=3, micro_batch=25, grad_accum=12, grad_ckpt=True
    )
    colls = collective_bytes(m, plan)
    per_gpu = sum(float(c.message_bytes) for c in colls)
    # ≈ 12 micro-batches × (2Ψ forward gather + ~2Ψ backward gather + 2Ψ bf16 reduce-scatter) = 12 × 6Ψ bytes
    assert per_gpu == pytest.approx(12 * 6 * 18.3e9, rel=0.01)
    assert 1.25e12 < per_gpu < 1.35e12


def test_time_model():
    hw = prof.load_hardware("h100-sxm")
    # NCCL ring latency: base 8.4 µs + 7 NVLink steps × 3.4 µs inside a node.
    assert float(ring_latency_s("all_gather", 8, 8, 3.4, 14.0)) == pytest.approx((8.4 + 7 * 3.4) * 1e-6)
    # 2 nodes, all-reduce: 2·15 steps, 2 passes × 2 network steps at 14 µs.
    assert float(ring_latency_s("all_reduce", 16, 8, 3.4, 14.0)) == pytest.approx(
        (8.4 + 26 * 3.4 + 4 * 14) * 1e-6
    )
    c = zero_collectives(
        psi=1e9,
        gathered=1e9,
        persistent=0,
        regathered=0,
        gather_calls=1,
        regather_calls=0,
        world=np.array([8, 16]),
        gpus_per_node=8,
        zero_stage=2,
        grad_accum=1,
        micro_batch=1,
        embed_dim=512,
    )[0]
    t = collective_time_s(c, hw)
    lat = [float(ring_latency_s("all_reduce", n, 8, 3.4, 14.0)) for n in (8, 16)]
    assert float(t[0]) == pytest.approx(2 * lat[0] + 2 * 7 / 8 * 2e9 / 360e9)
    assert float(t[1]) == pytest.approx(2 * lat[1] + 2 * 15 / 16 * 2e9 / 365e9)


def test_autocast_stack_moves_fp32_on_the_wire():
    # OpenCLIP's `amp`: fp32 weights under autocast, plain DDP, so the gradient all-reduce and the
    # gathered features are fp32 (4 bytes); the bundled trainer's bf16 engine sends 2 bytes.
    m = prof.load_model("openclip-vit-b32")
    psi = count_params(m).total
    plan = ParallelPlan(
        nodes=2, gpus_per_node=8, zero_stage=0, micro_batch=256, grad_accum=1, grad_ckpt=False
    )
    eager = _by_name(collective_bytes(m, plan))
    amp = _by_name(collective_bytes(m, plan, "amp"))
    assert float(eager["gradient all-reduce"].message_bytes) == psi * 2
    assert float(amp["gradient all-reduce"].message_bytes) == psi * 4
    feats = "CLIP feature all-gather"
    assert float(amp[feats].message_bytes) == 2 * float(eager[feats].message_bytes)


def test_estimate_and_search_price_the_same_wire_bytes():
    # The vectorised search derives the wire dtype from the stack exactly as `estimate` does: one amp
    # layout's exposed communication and step time agree between the two code paths, and differ from
    # the same layout's bf16-engine (eager) figures.
    from planner import evaluate as ev
    from planner.estimate import estimate
    from planner.layout import Layout
    from planner.spec import TrainingSpec

    m = prof.load_model("openclip-vit-b32")
    hw = prof.load_hardware("a100-40gb")
    plan = ParallelPlan(
        nodes=16,
        gpus_per_node=8,
        zero_stage=0,
        micro_batch=256,
        grad_accum=1,
        grad_ckpt=False,
        precision="fp16",
    )
    exposed = {}
    for stack in ("amp", "eager"):
        training = TrainingSpec.from_recipe(
            m.recipe, global_batch=256 * 128, stack=stack, precision="fp16", attention="math"
        )
        e = estimate(m, hw, plan, training)
        st = ev.step_terms(
            m,
            hw,
            Layout(
                nodes=np.array([16]),
                zero_stage=np.array([0]),
                offload_optimizer=np.array([False]),
                offload_param=np.array([False]),
                micro_batch=np.array([256]),
                grad_accum=np.array([1]),
                grad_ckpt=np.array([False]),
                image_size=training.image_size,
                patch_dropout=training.patch_dropout,
                stack=stack,
                precision="fp16",
                attention="math",
                loader_workers=training.loader_workers,
            ),
        )
        assert e.comm.exposed_s == float(st["comm_exposed_s"][0])
        assert e.compute.step_s == float(st["step_s"][0])
        exposed[stack] = e.comm.exposed_s
    assert exposed["amp"] > exposed["eager"]
