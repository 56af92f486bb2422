"""Serving against published inference measurements (planner/serving_validation.py): the prediction
is `evaplan serve`'s, the compute scale is a parameter, the fit/held-out split is training's rule,
no held-out figure reaches a fit, and `evaplan validate` reports serving apart from training."""

from __future__ import annotations

import csv
import io
import json
import random
import statistics
from pathlib import Path

import pytest
import yaml

import planner.halves as halves_rule
from planner import serve
from planner import serving_validation as sv
from planner import validation as v
from planner.published_serving import data_path, load_measurements


@pytest.fixture(scope="module")
def checks() -> list[sv.ServingCheck]:
    return sv.serving_checks()


@pytest.fixture(scope="module")
def scale() -> float:
    return sv.serving_only_scale()


# ------------------------------------------------------------------------------------------ split
def test_split_is_trainings_rule_per_stack():
    rows = load_measurements().measurements
    halves = sv.serving_halves()
    assert halves == v.split_halves(list(reversed(rows)), sv.serving_kind)
    for stack in {r.stack for r in rows}:
        group = sorted((r for r in rows if r.stack == stack), key=lambda r: halves_rule._hash(r.name))
        k = len(group) // 2
        assert [halves[r.name] for r in group] == ["fit"] * k + ["held-out"] * (len(group) - k), stack


def test_the_training_split_is_unchanged_by_the_kind_parameter():
    runs = v.load_runs().runs
    by_default = v.split_halves(runs)
    assert by_default == v.split_halves(runs, lambda r: r.published_samples_per_s is not None)


# ------------------------------------------------------------------------------------------ prediction
def test_the_prediction_is_serves_image_batch_time(checks):
    for c in checks:
        m = c.measurement
        model = sv.measured_model(m)
        hw = sv.scaled_hardware(m.hardware, None)
        want = serve.inference_batch_time_s(model, hw, "image", m.batch, "bf16", 1, m.stack, m.attention)
        assert c.predicted_latency_s == want.total_s, m.name
        assert model.vision.image_size == (m.image_size or model.vision.image_size)


def test_errors_are_predicted_over_published_speed(checks):
    for c in checks:
        m = c.measurement
        if c.figure == "latency_ms":
            assert c.error == pytest.approx(m.published.latency_ms / c.predicted_value - 1.0)
        else:
            assert c.error == pytest.approx(c.predicted_value / m.published.images_per_s - 1.0)


def test_the_compute_scale_is_a_parameter(checks):
    """A scale below 1 slows every device-bound prediction (a host-bound one keeps its host time); the
    shipped profiles carry none, so 1.0 is the default."""
    slow = sv.serving_checks(0.5)
    same = sv.serving_checks(1.0)
    assert (
        sum(b.predicted_images_per_s < a.predicted_images_per_s for a, b in zip(checks, slow, strict=True))
        > len(checks) / 2
    )
    for a, b, c in zip(checks, slow, same, strict=True):
        assert b.predicted_images_per_s <= a.predicted_images_per_s, a.measurement.name
        assert c.predicted_latency_s == pytest.approx(a.predicted_latency_s)
        assert (a.compute_scale, b.compute_scale) == (None, 0.5)
    with pytest.raises(ValueError, match="positive"):
        sv.serving_checks(0.0)


def test_summary_is_per_half(checks):
    s = sv.serving_summary(checks)
    assert s["all"].n == len(checks) == s["fit"].n + s["held-out"].n
    held = [abs(c.error) for c in checks if c.half == "held-out"]
    assert s["held-out"].median_abs == statistics.median(held)
    assert s["held-out"].worst_abs == max(held)


# ------------------------------------------------------------------------------------------ held-out
def _perturbed(tmp_path: Path, factor) -> tuple[str, int]:
    raw = yaml.safe_load(data_path().read_text(encoding="utf-8"))
    halves = sv.serving_halves()
    changed = 0
    for row in raw["measurements"]:
        if halves[row["name"]] == "held-out":
            key = "latency_ms" if "latency_ms" in row["published"] else "images_per_s"
            row["published"][key] *= factor()
            changed += 1
    path = tmp_path / "perturbed_serving.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path), changed


@pytest.mark.parametrize("how", ["halved", "doubled", "random"])
def test_no_held_out_figure_moves_a_fitted_value(tmp_path, checks, scale, how):
    """Every held-out figure ×0.5, ×2 or by its own seeded factor in [0.5, 2]: the split, what a fit may
    read (the fit half's log errors) and the scale a fit on the serving data makes stay exactly as they
    are, while the held-out errors move (the perturbation reached the rows)."""
    rng = random.Random(21)
    factor = {"halved": lambda: 0.5, "doubled": lambda: 2.0, "random": lambda: 2.0 ** rng.uniform(-1, 1)}[how]
    path, changed = _perturbed(tmp_path, factor)
    assert changed >= 10
    perturbed = sv.serving_checks(path=path)
    assert sv.serving_halves(path) == sv.serving_halves()
    assert sv.fit_half_log_errors(perturbed) == sv.fit_half_log_errors(checks)
    assert sv.serving_only_scale(path) == scale
    assert sv.serving_summary(perturbed)["held-out"] != sv.serving_summary(checks)["held-out"]


def test_a_fit_half_figure_does_move_the_fit(tmp_path, scale):
    """The converse, so the test above can fail: doubling the fit half's figures moves the fitted scale."""
    raw = yaml.safe_load(data_path().read_text(encoding="utf-8"))
    halves = sv.serving_halves()
    for row in raw["measurements"]:
        if halves[row["name"]] == "fit":
            key = "latency_ms" if "latency_ms" in row["published"] else "images_per_s"
            row["published"][key] *= 2.0
    path = tmp_path / "fit_doubled.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert sv.serving_only_scale(str(path)) != scale


# ------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def training_checks() -> list[v.RunCheck]:
    return v.check_all()


@pytest.fixture
def fast_training(monkeypatch, training_checks):
    """`evaplan validate` with the training checks computed once for this module (they are
    tests/planner/test_validation.py's subject; here only the serving part is)."""
    monkeypatch.setattr(v, "check_all", lambda path=None, **kw: training_checks)


@pytest.fixture(scope="module")
def joint_checks(training_checks) -> list[sv.ServingCheck]:
    """Serving at the one compute scale validate fits on both fit halves (what it prints)."""
    return sv.serving_checks(training_checks[0].compute_scale)


def test_validate_prints_serving_apart(cli, joint_checks, fast_training):
    checks = joint_checks
    r = cli("validate")
    assert r.exit_code == 0
    head, serving = r.output.split("\nserving: ", 1)
    assert "samples/s/GPU" in head and "openclip-b32-laion400m" in head
    for c in checks:
        assert c.measurement.name in serving and c.measurement.name not in head
    summary = serving.split("\n\nGPU-to-GPU ratios")[0].split("\n\n")[-1]  # the GPU-ratio table follows
    assert "median |error|" in summary and "worst |error|" in summary and "median error" in summary
    for half in ("all", "fit", "held-out"):
        assert any(line.startswith(half + " ") for line in summary.splitlines()), half
    s = sv.serving_summary(checks)
    assert f"{s['held-out'].median_abs:.1%}" in summary


def test_validate_json_and_csv_carry_serving(cli, joint_checks, fast_training):
    checks = joint_checks
    j = json.loads(cli("validate", "--format", "json").output)
    assert len(j["serving"]["measurements"]) == len(checks)
    assert set(j["serving"]["summary"]) == {"all", "fit", "held-out"}
    assert j["serving"]["summary"]["held-out"]["n"] == sum(c.half == "held-out" for c in checks)
    rows = list(csv.DictReader(io.StringIO(cli("validate", "--format", "csv").output)))
    serving_rows = [x for x in rows if x["measurement"]]
    assert len(serving_rows) == len(checks)
    assert len([x for x in rows if x["run"]]) == len(v.load_runs().runs)
    first = serving_rows[0]
    assert float(first["images_per_s_error"]) == pytest.approx(checks[0].error)
