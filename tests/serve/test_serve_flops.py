"""Inference FLOPs of planner.serve equal torch's FlopCounterMode on the real evaclip model in eval
mode, exactly, for both towers of every bundled model (meta tensors: no memory, no compute)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from planner.inference_time import inference_flops_per_sample  # noqa: E402
from planner.profiles import index, load_model  # noqa: E402

BATCH = 3


@pytest.mark.parametrize("name", list(index("models")))
def test_inference_flops_equal_flop_counter_exactly(name):
    from torch.utils.flop_counter import FlopCounterMode

    from evaclip.model import build_model

    spec = load_model(name)
    with torch.device("meta"):
        model = build_model(spec, patch_dropout=spec.recipe.patch_dropout)
        model.eval()  # patch dropout is off in eval mode: serving sees every patch
        size = spec.vision.image_size
        images = torch.empty(BATCH, 3, size, size)
        tokens = torch.zeros(BATCH, spec.text.context_length, dtype=torch.long)
        for tower, module, x in (("image", model.visual, images), ("text", model.text, tokens)):
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                module(x)
            measured = counter.get_total_flops()
            predicted = BATCH * inference_flops_per_sample(spec, tower)
            assert predicted == measured, (
                f"{name} {tower}: planner {predicted:.0f} vs FlopCounterMode {measured}"
            )
