"""benchmarks/gpu_check.py runs on a bare GPU machine without pydantic: its YAML-only model specs
must build exactly the model the profiles describe, and its stored predictions cover the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.parametrize("name", ["eva02-clip-b16", "eva02-clip-l14"])
def test_lite_spec_builds_the_profile_model(benchmark_script, name):
    from evaclip.flops import forward_flops_per_sample
    from evaclip.model import build_model
    from planner.profiles import load_model

    gc = benchmark_script("gpu_check")
    lite, full = gc.lite_model_spec(name), load_model(name)
    with torch.device("meta"):
        a, b = build_model(lite), build_model(full)
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    size = full.vision.image_size
    assert forward_flops_per_sample(lite, size, 0.0) == forward_flops_per_sample(full, size, 0.0)


def test_stored_predictions_are_todays_planner(benchmark_script):
    """The file a bare GPU machine falls back to (the planner needs pydantic) is exactly what the
    planner predicts today for every model × hardware the script looks up (it was once 2.5× off
    behind a range-only test). Refresh with `python benchmarks/gpu_check.py --predict-only
    --write-predictions` after planner changes."""
    gc = benchmark_script("gpu_check")
    stored = json.loads(gc.PREDICTIONS_FILE.read_text())
    assert stored["generated"] == gc.GENERATED_BY
    fresh = json.loads(json.dumps(gc.all_predictions()))  # the file's JSON round trip
    assert stored["predictions"] == fresh, f"stale {gc.PREDICTIONS_FILE.name}: run `{gc.GENERATED_BY}`"
    assert set(fresh) == {f"{m}@{hw}" for hw in ("h100-sxm", "h200") for m in gc.MODELS}


DOCS_QUOTING_MEMORY_RATIOS = ("README.md", "docs/plan-and-compare.md")


def test_docs_quote_todays_memory_ratios(benchmark_script):
    """README.md and docs/plan-and-compare.md quote the measured-over-predicted memory range that
    `python benchmarks/gpu_check.py --memory-ratios` prints from benchmarks/results and the stored
    predictions (kept equal to the planner's above): a planner change that moves it fails here."""
    gc = benchmark_script("gpu_check")
    rows = gc.memory_ratios()
    assert {r["log"] for r in rows} == {p.name for p in gc.RESULT_LOGS} and len(rows) >= 4
    line = gc.memory_ratio_text(rows).splitlines()[-1]
    lo, hi = min(r["ratio"] for r in rows), max(r["ratio"] for r in rows)
    assert line == f"memory peaks were {lo:.2f}–{hi:.2f}× the prediction"
    figure = line.removeprefix("memory peaks were ").removesuffix(" the prediction")
    # and per trainer ("DeepSpeed ZeRO-0: 0.87–0.92×"), which the docs quote beside it
    per_trainer = [x.split(": ")[1] for x in gc.memory_ratio_text(rows).splitlines()[-3:-1]]
    repo = SCRIPT.parents[1]
    for doc in DOCS_QUOTING_MEMORY_RATIOS:
        text = " ".join((repo / doc).read_text(encoding="utf-8").split())
        for quoted in (f"were {figure} the prediction", *per_trainer):
            assert quoted in text, f"{doc}: quote `{quoted}` (benchmarks/gpu_check.py --memory-ratios)"
