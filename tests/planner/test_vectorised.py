"""The vectorised path (planner.evaluate on numpy arrays) equals the scalar estimate() to the byte."""

from __future__ import annotations

import numpy as np
import pytest

from planner import evaluate as ev
from planner import profiles as prof
from planner.estimate import estimate
from planner.layout import Layout
from planner.spec import ParallelPlan, TrainingSpec


@pytest.mark.parametrize(
    "model_name,hw_name,offering_name",
    [
        ("eva-clip-18b", "h100-sxm", "aws-p5"),
        ("eva02-clip-l14", "mi300x", "azure-nd-mi300x-v5"),
    ],
)
def test_arrays_equal_scalar_estimates(model_name, hw_name, offering_name):
    m, hw, off = prof.load_model(model_name), prof.load_hardware(hw_name), prof.load_offering(offering_name)
    rng = np.random.default_rng(1)
    k = 24
    stage = rng.integers(0, 4, k)
    oo_dev = np.where(stage > 0, rng.integers(0, 2, k), 0)  # 0 none, 1 cpu
    op_dev = np.where(stage == 3, rng.integers(0, 3, k), 0)  # 0 none, 1 cpu, 2 nvme
    oo_dev = np.where(op_dev == 2, 2, oo_dev)  # NVMe params with NVMe optimizer (ZeRO-Infinity)
    nodes = rng.integers(1, 40, k)
    b = rng.integers(1, 64, k)
    gas = rng.integers(1, 8, k)
    ckpt = rng.integers(0, 2, k).astype(bool)
    img = rng.choice([224, 336], k)
    r = rng.choice([0.0, 0.5], k)
    layout = Layout(
        nodes=nodes,
        zero_stage=stage,
        offload_optimizer=oo_dev > 0,
        offload_param=op_dev > 0,
        nvme_optimizer=oo_dev == 2,
        nvme_param=op_dev == 2,
        micro_batch=b,
        grad_ckpt=ckpt,
        image_size=img,
        patch_dropout=r,
        grad_accum=gas,
    )
    terms, ms, _ = ev.gpu_memory_terms(m, hw, layout)
    gpu_total = ev.ordered_sum(terms)
    host_total = ev.ordered_sum(ev.host_memory_terms(ms, hw.gpus_per_node))
    st = ev.step_terms(m, hw, layout)
    G = hw.gpus_per_node
    B = b * gas * nodes * G
    run = ev.wall_of_run(
        m, hw, nodes=nodes, samples=1e9, global_batch=B, step_s=st["step_s"], restart_s=off.restart_s.value
    )
    wc = ev.cost_of_run(
        m,
        hw,
        run,
        nodes=nodes,
        usd_per_node_hour=off.on_demand_usd_per_node_hour.value,
        storage_usd_per_gb_month=off.storage_usd_per_gb_month.value,
    )
    dev = {0: "none", 1: "cpu", 2: "nvme"}
    for i in range(k):
        plan = ParallelPlan(
            nodes=int(nodes[i]),
            gpus_per_node=G,
            zero_stage=int(stage[i]),
            offload_optimizer=dev[int(oo_dev[i])],
            offload_param=dev[int(op_dev[i])],
            micro_batch=int(b[i]),
            grad_accum=int(gas[i]),
            grad_ckpt=bool(ckpt[i]),
        )
        tr = TrainingSpec(
            samples=1e9, global_batch=int(B[i]), image_size=int(img[i]), patch_dropout=float(r[i])
        )
        e = estimate(m, hw, plan, tr, off)
        assert e.memory.gpu_total_bytes == float(gpu_total[i])
        assert e.memory.host_per_node_bytes == float(host_total[i])
        assert e.compute.step_s == float(st["step_s"][i])
        assert e.comm.exposed_s == float(st["comm_exposed_s"][i])
        assert e.time.wall_s == float(wc["wall_s"][i])
        od = next(p for p in e.cost.prices if p.pricing == "on_demand")
        assert od.total_usd == float(wc["money"].total_usd[i])


def test_openclip_accumulation_agrees_in_arrays_and_scalars():
    """The amp stack's extra forward without gradients under accumulation (ops.nograd_forwards_per_
    microbatch) reaches the vectorised step exactly as the scalar estimate."""
    m, hw = prof.load_model("openclip-vit-l14"), prof.load_hardware("a100-80gb")
    gas = np.array([1, 2, 3, 1, 4])
    b = np.array([32, 16, 8, 64, 24])
    nodes = np.array([1, 2, 1, 4, 2])
    layout = Layout(
        nodes=nodes,
        zero_stage=np.zeros(5, dtype=int),
        offload_optimizer=np.zeros(5, dtype=bool),
        offload_param=np.zeros(5, dtype=bool),
        nvme_optimizer=np.zeros(5, dtype=bool),
        nvme_param=np.zeros(5, dtype=bool),
        micro_batch=b,
        grad_ckpt=np.ones(5, dtype=bool),
        image_size=np.full(5, 224),
        patch_dropout=np.zeros(5),
        grad_accum=gas,
        stack="amp",
        attention="math",
    )
    st = ev.step_terms(m, hw, layout)
    G = hw.gpus_per_node
    for i in range(5):
        plan = ParallelPlan(
            nodes=int(nodes[i]),
            gpus_per_node=G,
            zero_stage=0,
            micro_batch=int(b[i]),
            grad_accum=int(gas[i]),
            grad_ckpt=True,
        )
        B = int(b[i] * gas[i] * nodes[i] * G)
        tr = TrainingSpec(
            samples=1e9, global_batch=B, image_size=224, patch_dropout=0.0, stack="amp", attention="math"
        )
        assert estimate(m, hw, plan, tr).compute.step_s == float(st["step_s"][i])
