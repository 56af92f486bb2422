"""Keep the logit scale in [0, ln 100] the way the official training loop does: clamp the parameter
in place after every optimizer step (baaivision/EVA EVA-CLIP/rei/training/train.py:
`unwrap_model(model).logit_scale.clamp_(0, math.log(100))`, under `torch.no_grad()`).

Under DeepSpeed the parameter the model computes with is not the one the optimizer updates: with
bf16/fp16 or ZeRO the optimizer holds an fp32 master copy (whole, or this rank's partition of it)
and copies it into the model's parameter after each step. Clamping only the model's copy would be
undone by the next step, so both copies are clamped. Clamping is elementwise, so each rank clamps
its own partitions: no collective and no host synchronisation.
"""

from __future__ import annotations

from typing import Any

import torch

from evaclip.model import LOGIT_SCALE_MAX, LOGIT_SCALE_MIN


def _clamp_(t: torch.Tensor | None) -> None:
    if t is not None and t.numel():
        t.data.clamp_(LOGIT_SCALE_MIN, LOGIT_SCALE_MAX)


def _fp16_master_copy(param: torch.nn.Parameter, optimizer: Any) -> torch.Tensor | None:
    """The fp32 master of `param` in DeepSpeed's FP16_Optimizer (one flat copy per group,
    `fp32_groups_flat`) or FP16_UnfusedOptimizer (one copy per parameter, `fp32_groups`): what
    DeepSpeed uses for fp16, and for bf16 without ZeRO, when it does not use its bf16 optimizer."""
    groups = getattr(optimizer, "fp16_groups", None) or []
    flats = getattr(optimizer, "fp32_groups_flat", None)
    per_param = getattr(optimizer, "fp32_groups", None)
    for i, group in enumerate(groups):
        offset = 0
        for j, p in enumerate(group):
            if p is param:
                if flats:
                    return flats[i].narrow(0, offset, p.numel())
                if per_param:
                    return per_param[i][j]
                return None
            offset += p.numel()
    return None


@torch.no_grad()
def clamp_logit_scale(param: torch.nn.Parameter, optimizer: Any = None) -> None:
    """Clamp `param` to [LOGIT_SCALE_MIN, LOGIT_SCALE_MAX] in the model and in the optimizer's
    master copy, for a plain torch optimizer, DeepSpeed's bf16/fp16 optimizers and ZeRO 1-3."""
    if hasattr(param, "ds_id"):  # ZeRO-3: this rank's fp32 partition and 16-bit partition
        from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

        local = safe_get_local_fp32_param(param)
        if local is not None:
            safe_set_local_fp32_param(param, local.clamp(LOGIT_SCALE_MIN, LOGIT_SCALE_MAX))
        _clamp_(param.ds_tensor)
        _clamp_(param.data)  # a persistent (always gathered) parameter also holds the full value
        return
    mapping = getattr(param, "_hp_mapping", None)  # ZeRO-1/2 and the bf16 optimizer
    if mapping is not None:
        _clamp_(mapping.get_hp_fragment())
    else:
        _clamp_(_fp16_master_copy(param, optimizer))
    _clamp_(param.data)
