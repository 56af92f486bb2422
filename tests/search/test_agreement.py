"""The vectorised search and the scalar `estimate()` agree to the byte on every term (issue 4)."""

from __future__ import annotations

import numpy as np
import pytest

from planner import profiles as prof
from planner.estimate import estimate
from planner.grid import OFFLOAD_DEVICES, SearchSpace, build_grid
from planner.spec import ParallelPlan, TrainingSpec
from planner.vectorized import evaluate_grid, make_option

# (model, offering or hardware, pricing): priced on-demand, spot (other wall time), on-premises,
# and unpriced; NVIDIA and AMD (small_group_gbps), a ViT-L and the 18B.
CASES = [
    ("eva-clip-18b", "aws-p5", "spot"),
    ("eva-clip-18b", "tensorwave-mi300x", None),
    ("eva02-clip-l14", "onprem-h100", None),
    ("eva02-clip-e14-plus", "mi300x", None),
]
SAMPLES_PER_CASE = 250  # 1,000 candidates in all


def _plan(g, i: int) -> ParallelPlan:
    return ParallelPlan(
        nodes=int(g.nodes[i]),
        gpus_per_node=g.gpus_per_node,
        zero_stage=int(g.zero_stage[i]),
        offload_optimizer=OFFLOAD_DEVICES[int(g.offload_optimizer[i])],
        offload_param=OFFLOAD_DEVICES[int(g.offload_param[i])],
        micro_batch=int(g.micro_batch[i]),
        grad_accum=int(g.grad_accum[i]),
        grad_ckpt=bool(g.grad_ckpt[i]),
        hpz_partition_size=int(g.hpz_partition_size[i]),
    )


def _option(option_name: str, pricing: str | None):
    if option_name in prof.index("offerings"):
        off = prof.load_offering(option_name)
        return make_option(prof.load_hardware(off.hardware), off, pricing), off
    return make_option(prof.load_hardware(option_name), None, None), None


def _assert_agree(model, opt, off, training: TrainingSpec, samples: int, seed: int = 20261127) -> None:
    """`samples` random candidates of the recipe's grid: every term of evaluate_grid == estimate()'s."""
    r = model.recipe
    grid = build_grid(SearchSpace(max_nodes=96), opt.hardware.gpus_per_node, r.global_batch, 0.05)
    out = evaluate_grid(model, opt, training, grid, detail=True)
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(grid), samples, replace=False):
        plan = _plan(grid, int(i))
        est = estimate(
            model, opt.hardware, plan, training.model_copy(update={"global_batch": plan.global_batch}), off
        )
        want = {f"mem.{k}": v for k, v in est.memory.gpu_terms.items()}
        want.update(
            gpu_total_bytes=est.memory.gpu_total_bytes,
            host_per_node_bytes=est.memory.host_per_node_bytes,
            nvme_per_node_bytes=est.memory.nvme_per_node_bytes,
            compute_s=est.compute.compute_s,
            comm_total_s=est.comm.total_s,
            comm_exposed_s=est.comm.exposed_s,
            offload_s=est.compute.offload_s,
            step_s=est.compute.step_s,
        )
        if off is None:
            want.update(wall_s=est.time.wall_s)
        else:
            price = next(p for p in est.cost.prices if p.pricing == opt.pricing)
            want.update(
                wall_s=price.wall_s,
                gpu_hours=price.gpu_hours,
                total_usd=price.total_usd,
                storage_usd=price.storage_usd,
                energy_kwh=est.cost.energy_kwh,
                co2_kg=est.cost.co2_kg,
            )
        got = {k: float(out[k][i]) for k in want}
        assert got == want, (plan, {k: (got[k], want[k]) for k in want if got[k] != want[k]})


@pytest.mark.parametrize(("model_name", "option_name", "pricing"), CASES)
def test_vectorised_equals_scalar_estimate(model_name: str, option_name: str, pricing: str | None) -> None:
    model = prof.load_model(model_name)
    opt, off = _option(option_name, pricing)
    training = TrainingSpec.from_recipe(model.recipe, dataset_tb=12.5, checkpoints_kept=2)
    _assert_agree(model, opt, off, training, SAMPLES_PER_CASE)


@pytest.mark.parametrize("attention", ["math", "mem_efficient", "flash", "cudnn"])
@pytest.mark.parametrize("stack", ["amp", "eager"])
def test_vectorised_equals_scalar_under_each_attention_kernel(attention: str, stack: str) -> None:
    """The kernel drives memory and time in the search exactly as in estimate() (issue 26)."""
    model = prof.load_model("openclip-vit-l14")
    opt, off = _option("a100-80gb", None)
    training = TrainingSpec.from_recipe(model.recipe, stack=stack, attention=attention, precision="fp16")
    _assert_agree(model, opt, off, training, 25)
