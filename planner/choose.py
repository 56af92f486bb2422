"""Fill the settings a user did not give with the simplest feasible choice, and say which were chosen.

Simplest means: the model's published recipe first (ZeRO stage, activation checkpointing), no
offload, the fewest gradient-accumulation steps (the largest micro-batch) that fit; then, only for
settings the user left open, escalate one at a time: activation checkpointing, ZeRO-3, optimizer
offload to cpu, parameter offload to cpu. The search over all plans (`evaplan plan`) may replace this.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.errors import InfeasibleError
from planner.estimate import Estimate, estimate, memory_report
from planner.grid import divisors
from planner.spec import HardwareSpec, ModelSpec, OfferingSpec, ParallelPlan, TrainingSpec


@dataclass(frozen=True)
class Request:
    """What the user asked for; None means "choose for me"."""

    gpus: int | None = None
    nodes: int | None = None
    samples: float | None = None
    global_batch: int | None = None
    image_size: int | None = None
    patch_dropout: float | None = None
    precision: str | None = None
    stack: str = "eager"
    attention: str = "flash"
    zero_stage: int | None = None
    offload_optimizer: str | None = None
    offload_param: str | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    grad_ckpt: bool | None = None
    hpz_partition_size: int = 1
    quantized_weights: bool = False
    quantized_gradients: bool = False
    local_loss: bool = True
    checkpoint_every_s: float | None = None
    checkpoints_kept: int = 3
    dataset_tb: float = 0.0


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


def choose(
    model: ModelSpec, hardware: HardwareSpec, req: Request, offering: OfferingSpec | None = None
) -> Estimate:
    """The estimate of the simplest feasible plan for the request; `chosen` lists what evaplan picked."""
    r = model.recipe
    chosen: list[str] = []
    nodes = resolve_nodes(req, hardware)
    G = hardware.gpus_per_node
    n = nodes * G

    def pick(name: str, given, default, why: str):
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

    if req.global_batch is not None:
        B = req.global_batch
        if B % n:
            lo, hi = B // n * n, (B // n + 1) * n
            raise InfeasibleError(
                f"global batch {B} is not reachable on {n} GPUs: {B} / {n} = {B / n:g} samples per GPU",
                hint=f"use --global-batch {lo or hi}{f' or {hi}' if lo else ''}, or a GPU count that divides {B}",
            )
    elif req.micro_batch is not None and req.grad_accum is not None:
        B = req.micro_batch * req.grad_accum * n
        chosen.append(f"global_batch={B} (micro-batch × grad-accum × {n} GPUs)")
    else:
        B = n * max(1, round(r.global_batch / n))
        chosen.append(f"global_batch={B} (recipe {r.global_batch} rounded to a multiple of {n} GPUs)")
    per_gpu = B // n

    # (micro_batch, grad_accum) candidates, fewest accumulation steps first.
    if req.micro_batch is not None and req.grad_accum is not None:
        if req.micro_batch * req.grad_accum != per_gpu:
            raise InfeasibleError(
                f"global batch {B} is not reachable: micro-batch {req.micro_batch} × grad-accum {req.grad_accum} "
                f"× {n} GPUs = {req.micro_batch * req.grad_accum * n}",
                hint=f"micro-batch × grad-accum must be {per_gpu} on {n} GPUs",
            )
        shapes = [(req.micro_batch, req.grad_accum)]
    elif req.micro_batch is not None:
        if per_gpu % req.micro_batch:
            raise InfeasibleError(
                f"global batch {B} is not reachable with micro-batch {req.micro_batch}: {per_gpu} samples per GPU "
                f"is not a multiple of {req.micro_batch}",
                hint=f"use a micro-batch that divides {per_gpu}: {', '.join(map(str, divisors(per_gpu)[-6:]))}",
            )
        shapes = [(req.micro_batch, per_gpu // req.micro_batch)]
    elif req.grad_accum is not None:
        if per_gpu % req.grad_accum:
            raise InfeasibleError(
                f"global batch {B} is not reachable with grad-accum {req.grad_accum}: {per_gpu} samples per GPU "
                f"is not a multiple of {req.grad_accum}",
                hint=f"use a grad-accum that divides {per_gpu}: {', '.join(map(str, divisors(per_gpu)[:6]))}",
            )
        shapes = [(per_gpu // req.grad_accum, req.grad_accum)]
    else:
        shapes = [(per_gpu // g, g) for g in divisors(per_gpu)]

    training = TrainingSpec(
        samples=samples,
        global_batch=B,
        image_size=image_size,
        patch_dropout=patch_dropout,
        precision=precision,
        stack=req.stack,
        attention=req.attention,
        checkpoint_every_s=req.checkpoint_every_s,
        checkpoints_kept=req.checkpoints_kept,
        dataset_tb=req.dataset_tb,
    )

    # Escalation ladder over the settings the user left open.
    base = {
        "zero_stage": req.zero_stage if req.zero_stage is not None else r.zero_stage,
        "grad_ckpt": req.grad_ckpt if req.grad_ckpt is not None else r.grad_ckpt,
        "offload_optimizer": req.offload_optimizer or "none",
        "offload_param": req.offload_param or "none",
    }
    if (
        req.hpz_partition_size > 1
        or req.quantized_weights
        or req.quantized_gradients
        or base["offload_param"] != "none"
    ):
        if req.zero_stage is None:
            base["zero_stage"] = 3
    if base["offload_optimizer"] == "nvme" and req.zero_stage is None:
        base["zero_stage"] = 3
    rungs = [dict(base)]
    for key, value in (
        ("grad_ckpt", True),
        ("zero_stage", 3),
        ("offload_optimizer", "cpu"),
        ("offload_param", "cpu"),
    ):
        nxt = {**rungs[-1], key: value}
        valid = (nxt["offload_optimizer"] == "none" or nxt["zero_stage"] >= 1) and (
            nxt["offload_param"] == "none" or nxt["zero_stage"] == 3
        )
        if getattr(req, key) is None and rungs[-1][key] != value and valid:
            rungs.append(nxt)

    def plan_for(rung: dict, b: int, gas: int) -> ParallelPlan:
        return ParallelPlan(
            nodes=nodes,
            gpus_per_node=G,
            zero_stage=rung["zero_stage"],
            offload_optimizer=rung["offload_optimizer"],
            offload_param=rung["offload_param"],
            micro_batch=b,
            grad_accum=gas,
            grad_ckpt=rung["grad_ckpt"],
            precision=precision,
            hpz_partition_size=req.hpz_partition_size,
            quantized_weights=req.quantized_weights,
            quantized_gradients=req.quantized_gradients,
            local_loss=req.local_loss,
        )

    found: ParallelPlan | None = None
    for rung in rungs:
        for b, gas in shapes:
            plan = plan_for(rung, b, gas)
            mem = memory_report(model, hardware, plan, training, offering)
            if mem.fits_gpu and mem.fits_host:
                found = plan
                break
        if found is not None:
            break
    if found is None:
        # Nothing fits: report the most memory-frugal attempt, with what would make it fit.
        plan = plan_for(rungs[-1], *shapes[-1])
        est = estimate(model, hardware, plan, training, offering)
        return est.model_copy(update={"chosen": chosen + _plan_choices(req, plan)})
    est = estimate(model, hardware, found, training, offering)
    return est.model_copy(update={"chosen": chosen + _plan_choices(req, found)})


def _plan_choices(req: Request, plan: ParallelPlan) -> list[str]:
    out = []
    for key, label in (
        ("zero_stage", "zero_stage"),
        ("grad_ckpt", "grad_ckpt"),
        ("offload_optimizer", "offload_optimizer"),
        ("offload_param", "offload_param"),
        ("micro_batch", "micro_batch"),
        ("grad_accum", "grad_accum"),
    ):
        if getattr(req, key) is None:
            out.append(f"{label}={getattr(plan, key)} (simplest that fits)")
    return out


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
        tips.append("more GPUs or a GPU with more HBM")
    else:
        tips.append("an offering with more host RAM, or --offload-* nvme instead of cpu")
    return "try " + ", ".join(tips)
