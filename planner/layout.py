"""What a candidate plan sets, as one object that the scalar estimate and the vectorised search both
pass down to the physics: one batch object instead of long keyword lists.

Each numeric field is a Python scalar (one plan, `planner.estimate`) or a numpy array, one element per
candidate or broadcastable (`planner.vectorized`). Adding a setting touches this definition (a field
named as in ParallelPlan or TrainingSpec is read from it by `Layout.of` / `run_settings`) and the terms
that use it; a setting the search varies is also a grid column (`planner.vectorized._layout`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from planner.spec import ParallelPlan, TrainingSpec

Num = Any
# The Layout fields a run's TrainingSpec sets, under the same names.
RUN_SETTINGS = (
    "image_size",
    "patch_dropout",
    "attention",
    "stack",
    "precision",
    "optimizer_impl",
    "loader_workers",
)


@dataclass(frozen=True)
class Layout:
    """The layout of one or many candidates (DeepSpeed ZeRO data parallelism over nodes × GPUs) and
    the run settings the memory and time terms read (resolution, patch dropout, attention kernel,
    software stack, precision, data-loader workers)."""

    nodes: Num
    zero_stage: Num
    micro_batch: Num
    grad_ckpt: Num
    image_size: Num
    patch_dropout: Num
    grad_accum: Num = 1
    offload_optimizer: Num = False
    offload_param: Num = False
    nvme_optimizer: Num = False
    nvme_param: Num = False
    overlap_comm: Num = True
    hpz_partition_size: Num = 1
    quantized_weights: Num = False
    quantized_gradients: Num = False
    local_loss: Num = True
    gather_with_grad: Num = True
    attention: str = "flash"
    stack: str = "eager"
    precision: str = "bf16"
    optimizer_impl: str | None = None  # TrainingSpec.optimizer_impl: the amp stack's AdamW
    loader_workers: int | None = None

    @classmethod
    def of(cls, plan: ParallelPlan, training: TrainingSpec) -> Layout:
        """One plan's layout with its run's settings: every field the plan has under the same name,
        the offload devices as flags, and the training's settings (its precision among them)."""
        shared = {f.name: getattr(plan, f.name) for f in fields(cls) if f.name in ParallelPlan.model_fields}
        offload = dict(
            offload_optimizer=plan.offload_optimizer != "none",
            offload_param=plan.offload_param != "none",
            nvme_optimizer=plan.offload_optimizer == "nvme",
            nvme_param=plan.offload_param == "nvme",
        )
        return cls(**{**shared, **offload, **run_settings(training)})


def run_settings(training: TrainingSpec) -> dict[str, Any]:
    """The fields of a Layout that a run's training sets (the same for every candidate of a search):
    resolution, patch dropout, the attention kernel and software stack (which decide what attention
    keeps and moves), the precision and the data-loader workers per GPU."""
    return {name: getattr(training, name) for name in RUN_SETTINGS}
