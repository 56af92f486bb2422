"""The search finds the true optimum: on a small grid, brute force with the scalar `estimate()` (one
plan at a time, no numpy columns, no partial sort) and the vectorised `search()` choose the same plan.

The brute force applies the constraints as `evaplan plan` documents them (docs/plan-and-compare.md:
HBM, host RAM, NVMe, minimum data-parallel group, max GPUs, deadline) and the documented order:
objective, then the other two objectives, then fewer GPUs, then grid order.
"""

from __future__ import annotations

import math

import pytest

from planner import profiles as prof
from planner.estimate import estimate
from planner.grid import OFFLOAD_DEVICES, SearchSpace, build_grid
from planner.search import Constraints, search
from planner.spec import ParallelPlan, TrainingSpec
from planner.vectorized import make_option

OTHERS = {"cost": ("time", "energy"), "time": ("cost", "energy"), "energy": ("cost", "time")}


def _training(model) -> TrainingSpec:
    r = model.recipe
    # Loaders on nearly every host core of a GPU's share (14 on h100-sxm, 12 on mi300x): with the
    # default 4, the fastest EVA02-B/16 layouts on H100 all wait for their loaders, so the cheapest plan
    # is also the fastest and no deadline could bind.
    return TrainingSpec.from_recipe(r, dataset_tb=12.5, checkpoints_kept=2, loader_workers=12)


SPACE = SearchSpace(max_nodes=2)
TOLERANCE = 0.02
_scalar: dict[tuple[str, str], list[tuple[ParallelPlan, object]]] = {}


def _every_plan_by_estimate(model, opt, off, training) -> list[tuple[ParallelPlan, object]]:
    """estimate() of every grid candidate, one plan at a time (cached per model and offering)."""
    key = (model.name, off.name)
    if key not in _scalar:
        hw = opt.hardware
        grid = build_grid(SPACE, hw.gpus_per_node, training.global_batch, TOLERANCE)
        rows = []
        for i in range(len(grid)):
            plan = ParallelPlan(
                nodes=int(grid.nodes[i]),
                gpus_per_node=grid.gpus_per_node,
                zero_stage=int(grid.zero_stage[i]),
                offload_optimizer=OFFLOAD_DEVICES[int(grid.offload_optimizer[i])],
                offload_param=OFFLOAD_DEVICES[int(grid.offload_param[i])],
                micro_batch=int(grid.micro_batch[i]),
                grad_accum=int(grid.grad_accum[i]),
                grad_ckpt=bool(grid.grad_ckpt[i]),
                hpz_partition_size=int(grid.hpz_partition_size[i]),
            )
            update = {"global_batch": plan.global_batch}
            rows.append((plan, estimate(model, hw, plan, training.model_copy(update=update), off)))
        _scalar[key] = rows
    return _scalar[key]


def _brute_force(model, opt, off, training, constraints, objective) -> ParallelPlan:
    hw = opt.hardware
    min_group = hw.gpus_per_node if hw.collective.small_group_gbps is not None else 1
    best_key, best_plan = None, None
    for i, (plan, est) in enumerate(_every_plan_by_estimate(model, opt, off, training)):
        price = next(p for p in est.cost.prices if p.pricing == opt.pricing)
        world = plan.nodes * plan.gpus_per_node
        feasible = (
            est.memory.gpu_total_bytes <= hw.hbm_bytes * (1 - constraints.hbm_headroom)
            and est.memory.host_per_node_bytes <= opt.host_ram_bytes * (1 - constraints.host_headroom)
            and est.memory.nvme_per_node_bytes <= opt.nvme_bytes
            and world >= min_group
            and (plan.hpz_partition_size == 1 or plan.hpz_partition_size >= min_group)
            and (constraints.max_gpus is None or world <= constraints.max_gpus)
            and (constraints.deadline_s is None or price.wall_s <= constraints.deadline_s)
            and (constraints.budget_usd is None or price.total_usd <= constraints.budget_usd)
        )
        if not feasible:
            continue
        value = {"cost": price.total_usd, "time": price.wall_s, "energy": est.cost.energy_kwh}
        key = (value[objective], *(value[o] for o in OTHERS[objective]), world, i)
        if best_key is None or key < best_key:
            best_key, best_plan = key, plan
    assert best_plan is not None, "the brute force found no feasible plan: the case tests nothing"
    return best_plan


def _binding_deadline_s(model, opt, off, training) -> float:
    """Halfway between the fastest plan's wall time and the cheapest plan's: a deadline that rules
    out the cheapest plan but not every plan, whatever the time model predicts today."""
    free = Constraints(batch_tolerance=TOLERANCE)
    cheapest = _brute_force(model, opt, off, training, free, "cost")
    fastest = _brute_force(model, opt, off, training, free, "time")
    wall = {}
    for plan, est in _every_plan_by_estimate(model, opt, off, training):
        if plan in (cheapest, fastest):
            wall[plan] = next(p for p in est.cost.prices if p.pricing == opt.pricing).wall_s
    assert wall[fastest] < wall[cheapest], "the cheapest plan is also the fastest: no deadline can bind"
    return (wall[fastest] + wall[cheapest]) / 2


@pytest.mark.parametrize(
    ("model_name", "offering", "objective", "deadline"),
    [
        ("eva02-clip-b16", "aws-p5", "cost", None),
        ("eva02-clip-b16", "aws-p5", "time", None),
        ("eva02-clip-b16", "aws-p5", "energy", None),
        ("eva02-clip-b16", "aws-p5", "cost", "binding"),  # a deadline that binds
        ("eva02-clip-l14", "azure-nd-mi300x-v5", "cost", None),  # min data-parallel group of a node
    ],
)
def test_vectorised_search_chooses_the_brute_force_optimum(
    model_name: str, offering: str, objective: str, deadline: str | None
) -> None:
    model = prof.load_model(model_name)
    off = prof.load_offering(offering)
    opt = make_option(prof.load_hardware(off.hardware), off, None)
    training = _training(model)
    deadline_s = None if deadline is None else _binding_deadline_s(model, opt, off, training)
    constraints = Constraints(batch_tolerance=TOLERANCE, deadline_s=deadline_s)
    want = _brute_force(model, opt, off, training, constraints, objective)
    got = search(model, [opt], training, objective=objective, space=SPACE, constraints=constraints).chosen
    assert got.plan == want, f"search chose {got.plan}, brute force {want}"
    assert math.isfinite(got.wall_s)
