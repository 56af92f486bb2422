"""FLOPs of the real model, counted by torch.utils.flop_counter.FlopCounterMode on the meta device
(no memory, so even the 18B model counts in seconds). The trainer uses this for achieved TFLOP/s and
MFU; tests/evaclip check that planner.compute predicts the same number within 2%."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import torch
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    from planner.spec import ModelSpec

# Training = forward + backward (2 × forward: gradients w.r.t. activations and weights); activation
# recompute is not model FLOPs (docs/planner-model.md, "3. Compute"; MFU counts model FLOPs only).
TRAIN_FLOPS_PER_FORWARD = 3


@cache
def forward_flops_per_sample(spec: ModelSpec, image_size: int, patch_dropout: float) -> int:
    """Forward FLOPs of one image-text pair, both towers and the projections (loss excluded)."""
    from evaclip.model import build_model

    with torch.device("meta"):
        model = build_model(spec, image_size=image_size, patch_dropout=patch_dropout)
        model.train()  # patch dropout acts in training only
        images = torch.empty(1, 3, image_size, image_size)
        tokens = torch.zeros(1, spec.text.context_length, dtype=torch.long)
        counter = FlopCounterMode(display=False)
        with counter:
            model(images, tokens)
    return int(counter.get_total_flops())


def train_flops_per_sample(spec: ModelSpec, image_size: int, patch_dropout: float) -> int:
    return TRAIN_FLOPS_PER_FORWARD * forward_flops_per_sample(spec, image_size, patch_dropout)
