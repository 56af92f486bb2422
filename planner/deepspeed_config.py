"""THE one function that turns a ParallelPlan into a DeepSpeed config dict.

The renderer writes exactly this dict (`| tojson`), the trainer reads it back, and the planner's
memory and communication models assume the same ZeRO settings (planner/deepspeed_defaults.py), so
there is one source of truth for what DeepSpeed is asked to do. Pure Python: no deepspeed import.

Key names are DeepSpeed's own (docs "DeepSpeed Configuration JSON", and
deepspeed/runtime/zero/config.py + offload_config.py of DeepSpeed 0.19.8). Every bucket and
threshold is written out explicitly so that a config does not change meaning when DeepSpeed changes
a default.

Optimizer decision (ZeRO-Offload). When the optimizer states live on the host
(`offload_optimizer.device` cpu or nvme), DeepSpeed refuses a client optimizer unless
`zero_force_ds_cpu_optimizer` is false (engine.py `_configure_optimizer`), because a torch
optimizer stepping fp32 states on the CPU is several times slower than its vectorised
DeepSpeedCPUAdam. We keep that guard on and render an `"optimizer": {"type": "AdamW"}` block in
that case only, so DeepSpeed builds DeepSpeedCPUAdam itself; the trainer still passes its per-tower
layer-decay parameter groups (each with its own `lr`) as `model_parameters`, and drives the
learning rate itself (no `scheduler` block). DeepSpeed has no CPU LAMB, so LAMB + offload is
refused here with a clear error. Without offload no optimizer block is rendered: the trainer builds
AdamW or LAMB itself (LAMB is not on DeepSpeed's ZeRO-tested list, hence
`zero_allow_untested_optimizer: true`).
"""

from __future__ import annotations

from typing import Any, Literal

from planner import deepspeed_defaults as dsd
from planner.errors import EvaplanError
from planner.spec import ParallelPlan

# fp16 dynamic loss scaling: DeepSpeed's documented defaults (docs config-json "fp16"),
# written out for the same reason as the buckets.
FP16_INITIAL_SCALE_POWER = 16
FP16_LOSS_SCALE_WINDOW = 1000
FP16_HYSTERESIS = 2
FP16_MIN_LOSS_SCALE = 1

# DeepSpeed prints its own throughput line every `steps_per_print` steps; the trainer prints a
# readable progress line of its own, so DeepSpeed's is kept rare by default.
DEFAULT_STEPS_PER_PRINT = 1000


def _offload_block(device: str, nvme_path: str | None, what: str) -> dict[str, Any]:
    block: dict[str, Any] = {"device": device, "pin_memory": True}
    if device == "nvme":
        if not nvme_path:
            raise EvaplanError(
                f"{what}=nvme needs an NVMe folder on every node",
                hint="pass nvme_path (e.g. /local_nvme) or offload to cpu instead",
            )
        block["nvme_path"] = nvme_path
    return block


def _zero_block(plan: ParallelPlan, nvme_path: str | None) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": plan.zero_stage}
    if plan.zero_stage == 0:
        return zero
    zero.update(
        {
            "overlap_comm": plan.overlap_comm,
            "contiguous_gradients": dsd.CONTIGUOUS_GRADIENTS,
            "reduce_bucket_size": dsd.REDUCE_BUCKET_SIZE,
        }
    )
    if plan.zero_stage in (1, 2):
        zero["allgather_bucket_size"] = dsd.ALLGATHER_BUCKET_SIZE
    if plan.zero_stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": dsd.STAGE3_PREFETCH_BUCKET_SIZE,
                "stage3_param_persistence_threshold": dsd.STAGE3_PARAM_PERSISTENCE_THRESHOLD,
                "stage3_max_live_parameters": dsd.STAGE3_MAX_LIVE_PARAMETERS,
                "stage3_max_reuse_distance": dsd.STAGE3_MAX_REUSE_DISTANCE,
                # Checkpoints hold the partitioned fp32 states; the trainer gathers 16-bit weights
                # itself only when it exports a model.
                "stage3_gather_16bit_weights_on_model_save": False,
                "zero_hpz_partition_size": plan.hpz_partition_size,
                "zero_quantized_weights": plan.quantized_weights,
                "zero_quantized_gradients": plan.quantized_gradients,
            }
        )
    if plan.offload_optimizer != "none":
        zero["offload_optimizer"] = _offload_block(plan.offload_optimizer, nvme_path, "offload_optimizer")
    if plan.offload_param != "none":
        zero["offload_param"] = _offload_block(plan.offload_param, nvme_path, "offload_param")
    return zero


def _precision_blocks(precision: str) -> dict[str, Any]:
    if precision == "bf16":
        return {"bf16": {"enabled": True}}
    if precision == "fp16":
        return {
            "fp16": {
                "enabled": True,
                "loss_scale": 0,  # 0 = dynamic loss scaling
                "initial_scale_power": FP16_INITIAL_SCALE_POWER,
                "loss_scale_window": FP16_LOSS_SCALE_WINDOW,
                "hysteresis": FP16_HYSTERESIS,
                "min_loss_scale": FP16_MIN_LOSS_SCALE,
            }
        }
    return {}  # fp32: neither block


def deepspeed_config(
    plan: ParallelPlan,
    *,
    grad_clip: float | None,
    comms_logger: bool = False,
    nvme_path: str | None = None,
    optimizer: Literal["adamw", "lamb"] = "adamw",
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    weight_decay: float = 0.05,
    steps_per_print: int = DEFAULT_STEPS_PER_PRINT,
    wall_clock_breakdown: bool = False,
) -> dict[str, Any]:
    """The DeepSpeed config for `plan`, as a JSON-ready dict.

    `optimizer`, `lr`, `betas`, `eps` and `weight_decay` only matter with optimizer offload, where
    DeepSpeed must build the optimizer itself (see the module docstring); `lr` is then the default
    for parameter groups that carry none (the trainer's groups always carry their own).
    """
    if grad_clip is not None and grad_clip <= 0:
        raise EvaplanError(f"grad_clip must be positive, got {grad_clip}", hint="omit it to disable clipping")
    if steps_per_print <= 0:
        raise EvaplanError(f"steps_per_print must be positive, got {steps_per_print}", hint="use e.g. 100")
    cfg: dict[str, Any] = {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "gradient_clipping": float(grad_clip) if grad_clip is not None else 0.0,  # 0.0 = off
        **_precision_blocks(plan.precision),
        "zero_optimization": _zero_block(plan, nvme_path),
        "zero_allow_untested_optimizer": True,
        "steps_per_print": steps_per_print,
        "wall_clock_breakdown": wall_clock_breakdown,
    }
    if plan.offload_optimizer != "none":
        if optimizer == "lamb":
            raise EvaplanError(
                f"LAMB with offload_optimizer={plan.offload_optimizer}: DeepSpeed has no CPU LAMB "
                "(ZeRO-Offload steps the optimizer with DeepSpeedCPUAdam)",
                hint="use optimizer adamw with offload, or keep the optimizer on the GPU",
            )
        cfg["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": lr, "betas": list(betas), "eps": eps, "weight_decay": weight_decay},
        }
    if comms_logger:
        # prof_all: log every collective (docs "Communication Logging"); summaries are printed by
        # deepspeed.comm.log_summary() on every rank.
        cfg["comms_logger"] = {"enabled": True, "verbose": False, "prof_all": True, "debug": False}
    return cfg
