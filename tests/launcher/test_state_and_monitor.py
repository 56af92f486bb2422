"""The job store and the progress/cost arithmetic, without a backend."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from launcher.backends.base import JobState, parse_metrics_line, parse_progress_line
from launcher.monitor import CostBasis, compute_progress, window_rate
from launcher.state import JobNotFound, JobRecord, JobStore, state_dir

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
BASIS = CostBasis(
    nodes=4,
    usd_per_node_hour=55.04,
    total_steps=1000,
    global_batch=256,
    estimate_usd=300.0,
    pricing="on_demand",
    price_source="test",
)


def _record(**kw) -> JobRecord:
    base = dict(
        name="j1",
        backend="local",
        bundle_dir="/b",
        plan={"cost_basis": BASIS.to_dict()},
        estimate={},
        created_at=T0,
        started_at=T0,
    )
    return JobRecord(**{**base, **kw})


def test_state_dir_follows_env_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("EVAPLAN_STATE_DIR", str(tmp_path / "s"))
    assert state_dir() == tmp_path / "s"
    monkeypatch.delenv("EVAPLAN_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    assert state_dir() == tmp_path / "x" / "evaplan"


def test_store_round_trip_newest_first_and_clear_misses(state_dir):
    store = JobStore()
    with pytest.raises(JobNotFound, match="no jobs launched yet"):
        store.get(None)
    store.put(_record(name="old", backend_data={"pid": 1}, max_cost_usd=10.0))
    store.put(_record(name="new", created_at=T0 + timedelta(hours=1), namespace="ml"))
    assert [r.name for r in store.all()] == ["new", "old"]
    assert store.get(None).name == "new"
    old = store.get("old")
    assert old.backend_data == {"pid": 1} and old.max_cost_usd == 10.0 and old.started_at == T0
    with pytest.raises(JobNotFound, match="known jobs: new, old"):
        store.get("nope")
    store.put(old.with_(last_phase="Stopped"))
    assert store.get("old").last_phase == "Stopped" and len(store.all()) == 2


def test_spend_eta_projection_arithmetic():
    rec = _record(plan={"cost_basis": BASIS.to_dict(), "prior_elapsed_s": 1800.0})
    recent = [
        {"step": s, "samples_seen": 256 * s, "time_s": 2.0 * s, "samples_per_s": 999.0} for s in (90, 100)
    ]
    p = compute_progress(rec, JobState(phase="Running"), recent, now=T0 + timedelta(hours=1))
    assert p.elapsed_s == 3600 + 1800  # this run plus the run before the resume
    assert p.spent_usd == pytest.approx(1.5 * 4 * 55.04)
    assert p.samples_per_s == pytest.approx(256 * 10 / 20.0)  # Δsamples / Δtime_s, not the last step's 999
    assert p.eta_s == pytest.approx((1000 * 256 - 100 * 256) / 128.0)
    assert p.projected_usd == pytest.approx(p.spent_usd + p.eta_s / 3600 * 4 * 55.04)


def test_finished_job_costs_its_run_time_only():
    state = JobState(phase="Succeeded", started_at=T0, finished_at=T0 + timedelta(minutes=30))
    p = compute_progress(_record(), state, [], now=T0 + timedelta(days=3))
    assert (
        p.spent_usd == pytest.approx(0.5 * 4 * 55.04) and p.projected_usd == p.spent_usd and p.eta_s is None
    )


def test_unpriced_plan_has_no_dollars():
    basis = CostBasis(nodes=1, usd_per_node_hour=None, total_steps=10, global_batch=4, estimate_usd=None)
    p = compute_progress(
        _record(plan={"cost_basis": basis.to_dict()}, max_cost_usd=None), JobState("Running"), []
    )
    assert p.spent_usd is None and p.projected_usd is None and p.over_budget is None


def test_window_rate_without_a_clock_is_the_harmonic_mean():
    assert window_rate(
        [{"samples_per_s": 100.0, "samples_seen": 1}, {"samples_per_s": 50.0, "samples_seen": 2}]
    ) == pytest.approx(2 / (1 / 100 + 1 / 50))
    assert window_rate([]) is None


def test_metric_and_progress_line_parsing():
    assert parse_metrics_line('{"event": "step", "step": 3, "samples_seen": 12}')["step"] == 3
    assert parse_metrics_line('{"event": "checkpoint", "step": 3, "samples_seen": 12}') is None
    assert parse_metrics_line("[evaclip] checkpoint step00000003 (sigterm) in 0.1 s") is None
    line = (
        "step     12/120 | loss 4.1234 | lr 1.000e-03 |      52.5 samples/s |    0.00 TFLOP/s/GPU | "
        "MFU   n/a | peak mem   0.47 GiB | 0.177 s/step | 10:03:28"
    )
    assert parse_progress_line(line, global_batch=32) == {
        "step": 12,
        "samples_seen": 384,
        "samples_per_s": 52.5,
        "loss": 4.1234,
    }
