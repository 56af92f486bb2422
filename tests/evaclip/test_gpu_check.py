"""benchmarks/gpu_check.py runs on a bare GPU machine without pydantic: its YAML-only model specs
must build exactly the model the profiles describe, and its stored predictions cover the run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["eva02-clip-b16", "eva02-clip-l14"])
def test_lite_spec_builds_the_profile_model(name):
    from evaclip.flops import forward_flops_per_sample
    from evaclip.model import build_model
    from planner.profiles import load_model

    gc = _load()
    lite, full = gc.lite_model_spec(name), load_model(name)
    with torch.device("meta"):
        a, b = build_model(lite), build_model(full)
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    size = full.vision.image_size
    assert forward_flops_per_sample(lite, size, 0.0) == forward_flops_per_sample(full, size, 0.0)


def test_stored_predictions_cover_the_run():
    """The file a bare GPU machine falls back to (the planner needs pydantic) has every model ×
    hardware the script looks up. Its numbers are the planner's of the day it was written: refresh
    with `python benchmarks/gpu_check.py --predict-only --write-predictions` after planner changes."""
    gc = _load()
    stored = json.loads(gc.PREDICTIONS_FILE.read_text())
    assert stored["generated"].startswith("python benchmarks/gpu_check.py --predict-only --write-predictions")
    for hw in ("h100-sxm", "h200"):
        for m in gc.MODELS:
            pred = stored["predictions"][f"{m}@{hw}"]
            assert pred["samples_per_s_per_gpu"] > 0 and 0 < pred["mfu"] < 1 and pred["peak_mem_bytes"] > 0
