"""Fill the settings a user did not give with the search's best plan for the cluster, and say how.

`evaplan estimate` answers the same question as `evaplan plan --gpus N`: the settings the user left
open (ZeRO stage, offload, hpZ, activation checkpointing, micro-batch and gradient accumulation) are
those of the best candidate of `planner.search` on that GPU count, for the same objective, under the
same constraints (HBM safety margin, host RAM, NVMe, minimum data-parallel group) and the same batch
tolerance. Pinned settings are kept: they narrow the search space. So estimate, plan and compare print
the same dollars for the same question (tests/planner/test_agreement_cli.py).

When every layout setting is pinned there is nothing to search, and no numpy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner.errors import InfeasibleError
from planner.estimate import Estimate, estimate
from planner.headroom import DEFAULT_HEADROOM, WHY, HbmHeadroom
from planner.limits import check_request
from planner.ops import optimizer_impl_refusal
from planner.spec import HardwareSpec, ModelSpec, OfferingSpec, ParallelPlan, TrainingSpec
from planner.units import GIB

DEFAULT_BATCH_TOLERANCE = 0.02  # the same default as `evaplan plan --batch-tolerance`


# The request's settings that TrainingSpec takes as asked, under the same names (the recipe's
# figures are picked instead when not asked: `pick` in choose()).
_TRAINING_AS_ASKED = (
    "stack",
    "attention",
    "optimizer_impl",
    "checkpoint_every_s",
    "checkpoints_kept",
    "dataset_tb",
)


@dataclass(frozen=True)
class Request:
    """What the user asked for; None means "choose for me"."""

    gpus: int | None = None
    nodes: int | None = None
    samples: float | None = None
    global_batch: int | None = None
    batch_tolerance: float = DEFAULT_BATCH_TOLERANCE
    image_size: int | None = None
    patch_dropout: float | None = None
    precision: str | None = None
    stack: str = "eager"
    attention: str = "flash"
    optimizer_impl: str | None = None  # the amp stack's AdamW; None: ops.DEFAULT_OPTIMIZER_IMPL
    data_workers: int | None = None  # None: data_pipeline.default_loader_workers (4)
    zero_stage: int | None = None
    offload_optimizer: str | None = None
    offload_param: str | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    grad_ckpt: bool | None = None
    hpz_partition_size: int | None = None
    quantized_weights: bool = False
    quantized_gradients: bool = False
    local_loss: bool = True
    checkpoint_every_s: float | None = None
    checkpoints_kept: int = 3
    dataset_tb: float = 0.0
    objective: str = "cost"
    pricing: str | None = None
    hbm_headroom: HbmHeadroom = DEFAULT_HEADROOM


def resolve_nodes(req: Request, hardware: HardwareSpec) -> int:
    G = hardware.gpus_per_node
    if req.gpus is None and req.nodes is None:
        raise InfeasibleError("no cluster size given", hint=f"add --gpus N (a multiple of {G}) or --nodes K")
    if (req.gpus is not None and req.gpus <= 0) or (req.nodes is not None and req.nodes <= 0):
        raise InfeasibleError("the cluster size must be positive", hint="give --gpus or --nodes > 0")
    if req.gpus is not None:
        if req.gpus % G:
            lo, hi = req.gpus // G * G, (req.gpus // G + 1) * G
            alt = f"--gpus {lo} or {hi}" if lo else f"--gpus {hi}"
            raise InfeasibleError(
                f"--gpus {req.gpus} is not a multiple of the {G} GPUs per {hardware.name} node",
                hint=f"use {alt} (whole nodes)",
            )
        if req.nodes is not None and req.nodes * G != req.gpus:
            raise InfeasibleError(
                f"--gpus {req.gpus} and --nodes {req.nodes} disagree ({req.nodes} × {G} = {req.nodes * G})",
                hint="give only one of them",
            )
        return req.gpus // G
    assert req.nodes is not None
    return req.nodes


def objective_words(objective: str, priced: bool) -> str:
    """'cheapest', 'fastest', ... as the choice is described."""
    if objective == "time":
        return "fastest"
    if objective == "energy":
        return "least energy"
    return "cheapest" if priced else "fewest GPU-hours"


def choose(
    model: ModelSpec, hardware: HardwareSpec, req: Request, offering: OfferingSpec | None = None
) -> Estimate:
    """The estimate of the best plan for the request; `chosen` lists what evaplan picked, and how."""
    check_request(req)
    refusal = optimizer_impl_refusal(
        req.stack, req.optimizer_impl, model.recipe.optimizer
    ) or req.hbm_headroom.refusal(hardware.hbm_bytes, hardware.name)
    if refusal is not None:
        raise refusal
    r = model.recipe
    chosen: list[str] = []
    nodes = resolve_nodes(req, hardware)
    n = nodes * hardware.gpus_per_node

    def pick(name: str, given: Any, default: Any, why: str) -> Any:
        if given is not None:
            return given
        chosen.append(
            f"{name}={default:g} ({why})" if isinstance(default, float) else f"{name}={default} ({why})"
        )
        return default

    samples = pick("samples", req.samples, r.samples_seen, "recipe")
    image_size = pick("image_size", req.image_size, r.image_size, "recipe")
    patch_dropout = pick("patch_dropout", req.patch_dropout, r.patch_dropout, "recipe")
    precision = pick("precision", req.precision, r.precision if r.precision != "fp32" else "bf16", "recipe")
    if image_size % model.vision.patch_size:
        raise InfeasibleError(
            f"image size {image_size} is not a multiple of the patch size {model.vision.patch_size}",
            hint=f"use a multiple of {model.vision.patch_size}",
        )
    if req.micro_batch is not None and req.grad_accum is not None:
        target = req.micro_batch * req.grad_accum * n
        if req.global_batch is not None and req.global_batch != target:
            raise InfeasibleError(
                f"global batch {req.global_batch} is not reachable: micro-batch {req.micro_batch} × "
                f"grad-accum {req.grad_accum} × {n} GPUs = {target}",
                hint=f"micro-batch × grad-accum must be {req.global_batch / n:g} on {n} GPUs",
            )
        tolerance = 0.0
    else:
        target = req.global_batch if req.global_batch is not None else r.global_batch
        tolerance = req.batch_tolerance
    training = TrainingSpec(
        samples=samples,
        global_batch=target,
        image_size=image_size,
        patch_dropout=patch_dropout,
        precision=precision,
        loader_workers=req.data_workers,
        **{k: getattr(req, k) for k in _TRAINING_AS_ASKED},
    )
    _check_pinned_combination(req)
    pinned = _pinned_plan(req, nodes, hardware.gpus_per_node, precision, target, tolerance)
    if pinned is not None:
        est = estimate(model, hardware, pinned, training, offering)
        return apply_headroom(est.model_copy(update={"chosen": chosen}), req.hbm_headroom)
    plan, how = _search_plan(model, hardware, offering, req, training, nodes, tolerance)
    if plan.global_batch != target:
        chosen.append(
            f"global_batch={plan.global_batch} (within ±{tolerance:.0%} of {target:,}; "
            "--batch-tolerance 0 for exactly that)"
        )
    elif req.global_batch is None:
        chosen.append(f"global_batch={plan.global_batch} (recipe)")
    for key in ("zero_stage", "offload_optimizer", "offload_param", "hpz_partition_size", "grad_ckpt"):
        if key in ("offload_param", "hpz_partition_size") and plan.zero_stage != 3:
            continue  # stage 3 only: nothing was chosen
        if getattr(req, key) is None:
            chosen.append(f"{key}={getattr(plan, key)} ({how})")
    for key in ("micro_batch", "grad_accum"):
        if getattr(req, key) is None:
            chosen.append(f"{key}={getattr(plan, key)} ({how})")
    est = estimate(
        model, hardware, plan, training.model_copy(update={"global_batch": plan.global_batch}), offering
    )
    return apply_headroom(est.model_copy(update={"chosen": chosen}), req.hbm_headroom)


def _check_pinned_combination(req: Request) -> None:
    """Pinned settings DeepSpeed cannot combine, named before any search (ParallelPlan's rules)."""
    stage = req.zero_stage
    if stage is None:
        return
    needs: list[tuple[bool, str, str]] = [
        (req.offload_param not in (None, "none") and stage != 3, f"offload_param={req.offload_param}", "3"),
        (req.offload_optimizer == "nvme" and stage != 3, "offload_optimizer=nvme", "3"),
        (
            req.offload_optimizer not in (None, "none") and stage == 0,
            f"offload_optimizer={req.offload_optimizer}",
            "1, 2 or 3",
        ),
        (
            (req.hpz_partition_size or 1) > 1 and stage != 3,
            f"hpz_partition_size={req.hpz_partition_size}",
            "3",
        ),
    ]
    for bad, what, stages in needs:
        if bad:
            raise InfeasibleError(
                f"{what} needs zero_stage {stages} (got {stage}): DeepSpeed does it only there",
                hint=f"use --zero-stage {stages.split(',')[0]} or leave --zero-stage open",
            )


def _pinned_plan(
    req: Request, nodes: int, G: int, precision: str, target: int, tolerance: float
) -> ParallelPlan | None:
    """The plan when the user fixed every layout setting (nothing to search), else None."""
    if None in (req.zero_stage, req.offload_optimizer, req.offload_param, req.grad_ckpt):
        return None
    n = nodes * G
    b, gas = req.micro_batch, req.grad_accum
    if b is None or gas is None:
        if target % n or (tolerance and (b is None or gas is None)):
            return None
        per_gpu = target // n
        if b is not None and per_gpu % b == 0:
            gas = per_gpu // b
        elif gas is not None and per_gpu % gas == 0:
            b = per_gpu // gas
        else:
            return None
    hpz = req.hpz_partition_size
    if hpz is None:
        if req.zero_stage == 3 and req.offload_param == "none":
            return None  # hpZ is still open
        hpz = 1
    return ParallelPlan(
        nodes=nodes,
        gpus_per_node=G,
        zero_stage=req.zero_stage,  # type: ignore[arg-type]
        offload_optimizer=req.offload_optimizer,  # type: ignore[arg-type]
        offload_param=req.offload_param,  # type: ignore[arg-type]
        micro_batch=b,
        grad_accum=gas,
        grad_ckpt=req.grad_ckpt,  # type: ignore[arg-type]
        precision=precision,  # type: ignore[arg-type]
        hpz_partition_size=hpz,
        quantized_weights=req.quantized_weights,
        quantized_gradients=req.quantized_gradients,
        local_loss=req.local_loss,
    )


def _search_plan(
    model: ModelSpec,
    hardware: HardwareSpec,
    offering: OfferingSpec | None,
    req: Request,
    training: TrainingSpec,
    nodes: int,
    tolerance: float,
) -> tuple[ParallelPlan, str]:
    """The best candidate of planner.search on this cluster (or, when none fits, the most
    memory-frugal one), and a phrase saying how it was chosen."""
    import numpy as np  # only here: a fully pinned estimate never pays for numpy

    from planner.grid import OFFLOAD_DEVICES, SearchSpace, plan_of_row
    from planner.search import Constraints, constraint_masks, evaluate_options, top_order
    from planner.vectorized import make_option

    G = hardware.gpus_per_node
    n = nodes * G
    stages: tuple[int, ...] = (0, 1, 2, 3)
    if req.zero_stage is not None:
        stages = (req.zero_stage,)
    elif (
        (req.hpz_partition_size or 1) > 1
        or req.quantized_weights
        or req.quantized_gradients
        or req.offload_param not in (None, "none")
        or req.offload_optimizer == "nvme"
    ):
        stages = (3,)  # what these need (DeepSpeed: offload_param, nvme and ZeRO++ are stage 3)
    space = SearchSpace(
        zero_stages=stages,
        offload_optimizer=(req.offload_optimizer,) if req.offload_optimizer is not None else OFFLOAD_DEVICES,
        offload_param=(req.offload_param,) if req.offload_param is not None else OFFLOAD_DEVICES,
        grad_ckpt=(req.grad_ckpt,) if req.grad_ckpt is not None else (False, True),
        hpz=req.hpz_partition_size is None or req.hpz_partition_size > 1,
        gpus=n,
    )
    constraints = Constraints(
        batch_tolerance=tolerance,
        hbm_headroom=req.hbm_headroom.fraction,
        hbm_headroom_gib=req.hbm_headroom.gib,
    )
    option = make_option(hardware, offering, req.pricing)
    t = evaluate_options(model, [option], training, space, constraints)
    masks = constraint_masks(t, constraints)
    allowed = np.ones(len(t), dtype=bool)
    for col in ("micro_batch", "grad_accum", "hpz_partition_size"):
        value = getattr(req, col)
        if value is not None:
            allowed &= t[col] == value
    if not allowed.any():
        what = ", ".join(
            f"{col.replace('_', '-')} {getattr(req, col)}"
            for col in ("micro_batch", "grad_accum", "hpz_partition_size")
            if getattr(req, col) is not None
        )
        shapes = sorted({(int(b), int(g)) for b, g in zip(t["micro_batch"], t["grad_accum"], strict=True)})
        listed = ", ".join(f"{b} × {g}" for b, g in shapes[-8:])
        hint = f"micro-batch × grad-accum pairs that reach it on {n} GPUs include {listed}"
        raise InfeasibleError(
            f"global batch {training.global_batch:,} is not reachable with {what} on {n} GPUs", hint=hint
        )
    feasible = allowed.copy()
    for name in ("hbm", "host_ram", "nvme", "min_dp_group"):
        feasible &= masks[name]
    idx = np.nonzero(feasible)[0]
    if len(idx):
        i = int(top_order(t, req.objective, idx, 1)[0])
        how = f"{objective_words(req.objective, option.priced)} of {len(idx):,} feasible layouts on {n} GPUs"
    else:
        pool = np.nonzero(allowed & masks["min_dp_group"])[0]
        if not len(pool):
            pool = np.nonzero(allowed)[0]
        i = int(pool[np.lexsort((pool, t["gpu_total_bytes"][pool]))][0])
        how = f"most memory-frugal of {len(pool):,} layouts on {n} GPUs; none fits"
    plan = plan_of_row(
        t,
        i,
        gpus_per_node=G,
        precision=training.precision,
        quantized_weights=req.quantized_weights,
        quantized_gradients=req.quantized_gradients,
        local_loss=req.local_loss,
    )
    return plan, how


def apply_headroom(est: Estimate, headroom: HbmHeadroom) -> Estimate:
    """The estimate with its fit and verdict judged against HBM less the safety margin."""
    mem = est.memory
    reserve = headroom.reserve_bytes(mem.hbm_bytes)
    usable = mem.hbm_bytes - reserve
    fits_gpu = mem.gpu_total_bytes <= usable
    fits = fits_gpu and mem.fits_host
    margin = (
        f"safety margin {reserve / GIB:.1f} GiB = {headroom.describe()} for {WHY}"
        if not headroom.none
        else "no safety margin: --hbm-headroom 0"
    )
    if not fits_gpu:
        big = max(mem.gpu_terms.items(), key=lambda kv: kv[1])
        verdict = (
            f"does not fit: {mem.gpu_total_bytes / GIB:.1f} GiB per GPU > {usable / GIB:.1f} GiB usable of "
            f"{mem.hbm_bytes / GIB:.0f} GiB HBM ({margin}; largest term {big[0]} {big[1] / GIB:.1f} GiB)"
        )
    elif not mem.fits_host:
        verdict = (
            f"does not fit host RAM: {mem.host_per_node_bytes / GIB:.0f} GiB per node > "
            f"{mem.host_ram_bytes / GIB:.0f} GiB"
        )
    else:
        verdict = (
            f"fits: {mem.gpu_total_bytes / GIB:.1f} of {mem.hbm_bytes / GIB:.0f} GiB per GPU "
            f"({mem.gpu_headroom_bytes / GIB:.1f} GiB free; {margin}); host "
            f"{mem.host_per_node_bytes / GIB:.0f} of {mem.host_ram_bytes / GIB:.0f} GiB per node"
        )
    return est.model_copy(
        update={"fits": fits, "verdict": verdict, "memory": mem.model_copy(update={"fits_gpu": fits_gpu})}
    )


def fixes_for(est: Estimate) -> str:
    """What would make a plan that does not fit, fit."""
    p, mem = est.plan, est.memory
    tips = []
    if not mem.fits_gpu:
        if not p.grad_ckpt:
            tips.append("--grad-ckpt")
        if p.zero_stage < 3:
            tips.append("--zero-stage 3")
        if p.micro_batch > 1:
            tips.append("a smaller --micro-batch with a larger --grad-accum")
        if p.offload_optimizer == "none" and p.zero_stage >= 1:
            tips.append("--offload-optimizer cpu")
        tips.append("more GPUs, a GPU with more HBM, or a smaller --hbm-headroom")
    else:
        tips.append("an offering with more host RAM, or --offload-* nvme instead of cpu")
    return "try " + ", ".join(tips)
