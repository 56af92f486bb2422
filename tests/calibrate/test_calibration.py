"""`evaplan calibrate` and planner.calibration without torch: metrics files written from known
efficiency factors must give those factors back through the planner's own physics; bad metrics and
bad calibration files are refused with one line; estimate / plan use a calibration and say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from planner import calibration as cb
from planner.errors import EvaplanError, ProfileError
from planner.estimate import estimate
from planner.profiles import load_file, load_hardware, load_model
from planner.spec import ParallelPlan, Sourced, SourcedNonNegative, TrainingSpec

GIB = 2**30
MODEL = "eva-clip-debug"
HW = "cpu"


def _plan(
    micro_batch: int = 4, zero_stage: int = 1, grad_accum: int = 1
) -> tuple[ParallelPlan, TrainingSpec]:
    plan = ParallelPlan(
        nodes=1,
        gpus_per_node=2,
        zero_stage=zero_stage,
        micro_batch=micro_batch,
        grad_accum=grad_accum,
        grad_ckpt=False,
    )
    gb = plan.global_batch
    return plan, TrainingSpec(samples=20 * gb, global_batch=gb, image_size=32, patch_dropout=0.0)


def _truth(
    plan: ParallelPlan,
    training: TrainingSpec,
    scale: float,
    reserved_gib: float,
    microbatch_s: float | None = None,
    step_over_s: float | None = None,
):
    """The planner's estimate with known factors: what a run "measures" in these tests (overheads
    None: the derived defaults)."""
    hw = load_hardware(HW)
    upd = {
        "compute_scale": Sourced(value=scale, source="test truth", observed="2026-11-27"),
        "memory_reserved_gib": Sourced(value=reserved_gib, source="test truth", observed="2026-11-27"),
    }
    if microbatch_s is not None:
        upd["microbatch_overhead_s"] = SourcedNonNegative(
            value=microbatch_s, source="test truth", observed="2026-11-27"
        )
    if step_over_s is not None:
        upd["step_overhead_s"] = SourcedNonNegative(
            value=step_over_s, source="test truth", observed="2026-11-27"
        )
    return estimate(load_model(MODEL), hw.model_copy(update=upd), plan, training)


def write_metrics(
    path: Path,
    *,
    job: str,
    micro_batch: int = 4,
    zero_stage: int = 1,
    scale: float = 0.08,
    reserved_gib: float = 0.4,
    steps: int = 12,
    model: str = MODEL,
    outlier_every: int = 0,
    comm_bytes: float | None = None,
    grad_accum: int = 1,
    microbatch_s: float | None = None,
    step_over_s: float | None = None,
) -> Path:
    """A metrics.jsonl as evaclip writes it (evaclip/metrics.py keys) for a run whose step time and
    memory are the planner's at the given factors (every `outlier_every`-th step 3× slower: a
    contended core)."""
    plan, training = _plan(micro_batch, zero_stage, grad_accum)
    e = _truth(plan, training, scale, reserved_gib, microbatch_s, step_over_s)
    start = {
        "event": "start",
        "job_name": job,
        "model": model,
        "hardware": HW,
        "world_size": plan.world_size,
        "micro_batch": micro_batch,
        "grad_accum": grad_accum,
        "global_batch": plan.global_batch,
        "zero_stage": zero_stage,
        "precision": "bfloat16",
        "total_steps": steps,
        "image_size": 32,
        "patch_dropout": 0.0,
        "grad_ckpt": False,
        "optimizer": "adamw",
        "start_step": 0,
        "resumed_from": None,
        "flops_per_sample": e.compute.model_flops_per_sample,
        "peak_tflops": load_hardware(HW).bf16_dense_tflops.value,
        "device": "cpu",
        "time": 1.0,
    }
    lines = [start]
    for s in range(1, steps + 1):
        slow = s == 1 or (outlier_every and s % outlier_every == 0)  # the first step is always slow
        t = e.compute.step_s * (3.0 if slow else 1.0)
        rec = {
            "event": "step",
            "step": s,
            "samples_seen": s * plan.global_batch,
            "time_s": s * t,
            "step_time_s": t,
            "samples_per_s": plan.global_batch / t,
            "loss": 4.0,
            "lr": 1e-3,
            "tflops_per_gpu": 0.0004,
            "mfu": 0.08,
            "peak_mem_bytes": int(e.memory.gpu_total_bytes),
            "peak_mem_kind": "host_rss",
            "world_size": 2,
            "micro_batch": micro_batch,
            "grad_accum": grad_accum,
            "zero_stage": zero_stage,
            "attention": "sdpa",
        }
        if comm_bytes is not None:
            rec["comm_bytes"] = {"all_reduce": comm_bytes}
            rec["comm_calls"] = {"all_reduce": 1}
        lines.append(rec)
    lines.append({"event": "end", "step": steps, "status": "completed", "time_s": 10.0})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture
def profiles_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "profiles"
    d.mkdir()
    monkeypatch.setenv("EVAPLAN_PROFILES_DIR", str(d))
    monkeypatch.setenv("EVAPLAN_STATE_DIR", str(tmp_path / "state"))
    return d


# ----------------------------------------------------------------------------------- the fit
def test_fit_recovers_the_factors_a_run_was_generated_with(tmp_path: Path) -> None:
    hw = load_hardware(HW)
    run = cb.read_run(write_metrics(tmp_path / "m.jsonl", job="a", scale=0.08, reserved_gib=0.4))
    plan, training = cb.plan_from_start(run, load_model(MODEL), hw)
    cal = cb.calibrate([cb.observe("a", run, load_model(MODEL), plan, training)], hw)
    assert cal.compute_scale.value == pytest.approx(0.08, rel=1e-6)
    assert cal.memory_reserved_gib.value == pytest.approx(0.4, rel=1e-6)
    r = cal.runs[0]
    assert r.calibrated_step_s == pytest.approx(r.measured_step_s, rel=1e-6)
    assert r.steps_timed == 11  # the slow first step is warm-up
    # The run went at 0.08 of the modelled device rates: the shipped profile predicts it far too fast.
    assert r.uncalibrated_step_s < 0.5 * r.measured_step_s


def test_fit_transfers_to_another_micro_batch_and_zero_stage(tmp_path: Path) -> None:
    """Calibrated on run A, the planner predicts run B (other micro-batch, other ZeRO stage) exactly
    when both share the hardware's factors; uncalibrated it is off by the scale."""
    hw, model = load_hardware(HW), load_model(MODEL)
    a = cb.read_run(write_metrics(tmp_path / "a.jsonl", job="a", micro_batch=4, zero_stage=1, scale=0.05))
    cal = cb.calibrate([cb.observe("a", a, model, *cb.plan_from_start(a, model, hw))], hw)
    plan_b, training_b = _plan(micro_batch=16, zero_stage=2)
    measured_b = _truth(plan_b, training_b, 0.05, 0.4).compute.step_s
    predicted_b = estimate(model, cb.apply(hw, cal), plan_b, training_b).compute.step_s
    assert predicted_b == pytest.approx(measured_b, rel=1e-6)
    assert abs(estimate(model, hw, plan_b, training_b).compute.step_s / measured_b - 1) > 0.5


def test_several_runs_are_fitted_together(tmp_path: Path) -> None:
    """Two runs of one micro-batch and accumulation (other ZeRO stages) cannot separate a fixed time
    from the compute scale: one scale between theirs, the derived overheads kept."""
    hw, model = load_hardware(HW), load_model(MODEL)
    obs = []
    for job, stage, scale in (("a", 1, 0.04), ("b", 2, 0.08)):
        run = cb.read_run(write_metrics(tmp_path / f"{job}.jsonl", job=job, zero_stage=stage, scale=scale))
        obs.append(cb.observe(job, run, model, *cb.plan_from_start(run, model, hw)))
    cal = cb.calibrate(obs, hw)
    assert 0.04 < cal.compute_scale.value < 0.08
    assert cal.microbatch_overhead_s is None and cal.step_overhead_s is None
    errs = [(r.calibrated_step_s - r.measured_step_s) / r.measured_step_s for r in cal.runs]
    assert errs[0] < 0 < errs[1]  # between the two: too fast for the slower run, too slow for the faster


def _observe(tmp_path: Path, job: str, **kw) -> cb.Observation:
    hw, model = load_hardware(HW), load_model(MODEL)
    run = cb.read_run(write_metrics(tmp_path / f"{job}.jsonl", job=job, **kw))
    return cb.observe(job, run, model, *cb.plan_from_start(run, model, hw))


def test_two_micro_batches_fit_scale_and_micro_batch_overhead(tmp_path: Path) -> None:
    """Runs at micro-batch 4 and 16 whose steps carry a fixed 0.12 s per micro-batch (as measured here):
    the fit gives back scale and overhead, and predicts micro-batch 8 and gradient accumulation 2 exactly;
    the scale alone cannot."""
    hw, model = load_hardware(HW), load_model(MODEL)
    truth = dict(scale=0.2, microbatch_s=0.12)
    obs = [_observe(tmp_path, "a", micro_batch=4, **truth), _observe(tmp_path, "b", micro_batch=16, **truth)]
    cal = cb.calibrate(obs, hw)
    assert cal.compute_scale.value == pytest.approx(0.2, rel=1e-6)
    assert cal.microbatch_overhead_s.value == pytest.approx(0.12, rel=1e-6)
    assert cal.step_overhead_s is None  # one gradient accumulation: the derived figure stays
    assert "120 ms per micro-batch" in cal.describe()
    for mb, gas in ((8, 1), (4, 2)):
        plan, training = _plan(micro_batch=mb, grad_accum=gas)
        measured = _truth(plan, training, 0.2, 0.4, microbatch_s=0.12).compute.step_s
        assert estimate(model, cb.apply(hw, cal), plan, training).compute.step_s == pytest.approx(
            measured, rel=1e-6
        )
    # The old single-factor fit on the same two runs misses both.
    scale_only = cb.fit_scale(obs, hw)
    hw1 = cb._with(hw, scale=scale_only)
    errs = [estimate(model, hw1, o.plan, o.training).compute.step_s / o.step_s - 1 for o in obs]
    assert max(abs(e) for e in errs) > 0.1


def test_three_layouts_fit_step_overhead_too(tmp_path: Path) -> None:
    hw = load_hardware(HW)
    truth = dict(scale=0.05, microbatch_s=0.1, step_over_s=0.03)
    obs = [
        _observe(tmp_path, "a", micro_batch=4, **truth),
        _observe(tmp_path, "b", micro_batch=16, **truth),
        _observe(tmp_path, "c", micro_batch=4, grad_accum=3, **truth),
    ]
    assert cb.fitted_overheads(obs) == ("microbatch_overhead_s", "step_overhead_s")
    cal = cb.calibrate(obs, hw)
    assert cal.compute_scale.value == pytest.approx(0.05, rel=1e-6)
    assert cal.microbatch_overhead_s.value == pytest.approx(0.1, rel=1e-6)
    assert cal.step_overhead_s.value == pytest.approx(0.03, rel=1e-5)
    assert all(r.calibrated_step_s == pytest.approx(r.measured_step_s, rel=1e-6) for r in cal.runs)


def test_overheads_are_never_negative() -> None:
    x, loss = cb._nonnegative_lstsq({"m": [1.0, 2.0], "s": [1.0, 1.0]}, [1.0, 0.5])
    # unconstrained: m = −0.5, s = 1.5; constrained: the best of s alone (0.75) and m alone (0.4)
    assert x["m"] == 0.0 and x["s"] == pytest.approx(0.75) and loss == pytest.approx(0.125)


def test_median_ignores_contended_steps(tmp_path: Path) -> None:
    hw, model = load_hardware(HW), load_model(MODEL)
    run = cb.read_run(write_metrics(tmp_path / "m.jsonl", job="a", scale=0.08, outlier_every=4))
    o = cb.observe("a", run, model, *cb.plan_from_start(run, model, hw))
    assert o.spread > 1.0  # p10..p90 spans the 3× outliers
    assert cb.calibrate([o], hw).compute_scale.value == pytest.approx(0.08, rel=1e-6)


def test_a_run_faster_than_the_peak_allows_is_refused(tmp_path: Path) -> None:
    hw, model = load_hardware(HW), load_model(MODEL)
    path = write_metrics(tmp_path / "m.jsonl", job="a", scale=0.08)
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    for r in recs:
        if r["event"] == "step":
            r["step_time_s"] = 1e-6
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    run = cb.read_run(path)
    with pytest.raises(EvaplanError, match="ran faster than the planner's step at 10× the modelled rates"):
        cb.calibrate([cb.observe("a", run, model, *cb.plan_from_start(run, model, hw))], hw)


# ----------------------------------------------------------------------------------- bad metrics
@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        (None, "is truncated: line 14 is not a whole JSON record (the last line"),
        ('{"event": "step", "step": 1}\n', "has no `start` record"),
        ('["not", "a", "record"]\n', "is not an evaclip metrics record"),
    ],
)
def test_bad_metrics_files_are_refused_with_one_line(cli, profiles_dir, tmp_path, content, message) -> None:
    path = tmp_path / "metrics.jsonl"
    if content is None:
        write_metrics(path, job="a")
        path.write_text(path.read_text()[:-40])  # the end record cut mid-write
    else:
        path.write_text(content)
    r = cli("calibrate", str(path), "--hardware", HW)
    assert r.exit_code == 2
    assert message in r.stderr and str(path) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (profiles_dir / "calibrations").exists()


@pytest.mark.parametrize(
    ("event", "key", "value", "message"),
    [
        ("step", "step_time_s", "x", "has step_time_s 'x', not a finite number"),
        ("step", "peak_mem_bytes", None, "has peak_mem_bytes 'None', not a finite number"),
        ("step", "peak_mem_bytes", 10**400, "not a finite number up to 10^18"),
        ("start", "micro_batch", "x", "has micro_batch 'x', not a whole number"),
        ("start", "micro_batch", 10**30, "not a whole number up to 10^18"),
        ("start", "model", 5, "has model '5', not a string"),
        ("start", "patch_dropout", "nan", "not a finite number"),
        ("start", "grad_ckpt", "maybe", "not true or false"),
        ("step", "step", "[" * 5000 + "]" * 5000, "nests too deeply to be a metrics record"),
    ],
    ids=[
        "str-time",
        "null-mem",
        "huge-mem",
        "str-batch",
        "huge-batch",
        "num-model",
        "str-nan",
        "str-bool",
        "deep",
    ],
)
def test_a_record_of_the_wrong_type_is_one_line(
    cli, profiles_dir, tmp_path, event, key, value, message
) -> None:
    """A metrics file is a file the user hands us: a value the trainer never writes (a string, null, a
    400-digit integer, nesting past the JSON parser's recursion) is one line, exit 2 (these ended in
    internal errors: ValueError, TypeError, OverflowError, RecursionError)."""
    path = write_metrics(tmp_path / "m.jsonl", job="a")
    lines = path.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if json.loads(line)["event"] == event)
    rec = json.loads(lines[k])
    if key == "step" and isinstance(value, str) and value.startswith("["):
        lines[k] = value  # the whole line
    else:
        rec[key] = value
        lines[k] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    r = cli("calibrate", str(path), "--hardware", HW)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (profiles_dir / "calibrations").exists()


def test_too_few_steps_are_refused(cli, profiles_dir, tmp_path) -> None:
    path = write_metrics(tmp_path / "m.jsonl", job="a", steps=3)
    r = cli("calibrate", str(path), "--hardware", HW)
    assert r.exit_code == 2 and "has 3 step record(s); calibration needs at least 4" in r.stderr


def test_metrics_of_another_model_are_refused(cli, profiles_dir, tmp_path) -> None:
    """A job's plan is for eva-clip-debug; a metrics file of another model is not its run."""
    from launcher.state import JobRecord, JobStore

    plan, training = _plan()
    est = estimate(load_model(MODEL), load_hardware(HW), plan, training)
    metrics = write_metrics(tmp_path / "m.jsonl", job="a")
    text = metrics.read_text().replace(f'"model": "{MODEL}"', '"model": "eva02-clip-b16"')
    metrics.write_text(text)
    JobStore().put(
        JobRecord(
            name="job-a",
            backend="local",
            bundle_dir=str(tmp_path),
            plan={},
            estimate=est.model_dump(mode="json"),
            backend_data={"metrics_path": str(metrics)},
        )
    )
    r = cli("calibrate", "job-a")
    assert r.exit_code == 2
    assert "is from model 'eva02-clip-b16', but the plan is for 'eva-clip-debug'" in r.stderr


def test_metrics_of_another_layout_are_refused(tmp_path) -> None:
    plan, training = _plan(micro_batch=8)
    est = estimate(load_model(MODEL), load_hardware(HW), plan, training)
    run = cb.read_run(write_metrics(tmp_path / "m.jsonl", job="a", micro_batch=4))
    with pytest.raises(EvaplanError, match="micro_batch 4 differs from the plan's 8"):
        cb.check_run_matches(run, est, load_hardware(HW))


# ----------------------------------------------------------------------------------- calibration files
def _write_valid(cli, tmp_path: Path) -> Path:
    path = write_metrics(tmp_path / "a.jsonl", job="a", scale=0.08)
    r = cli("calibrate", str(path), "--hardware", HW)
    assert r.exit_code == 0, r.output
    return Path(r.stdout.split(":", 1)[0].removeprefix("wrote "))


def test_calibration_files_are_validated_like_profiles(cli, profiles_dir, tmp_path) -> None:
    path = _write_valid(cli, tmp_path)
    assert path == profiles_dir / "calibrations" / "cpu.yaml"
    assert load_file(path).compute_scale.value == pytest.approx(0.08, rel=1e-6)
    good = path.read_text()

    path.write_text(good.replace("hardware: cpu", "hardware: cpu\nmfu_fudge: 2"))
    r = cli("estimate", "--model", MODEL, "--hardware", HW, "--gpus", "2")
    assert r.exit_code == 2
    assert f"{path}: mfu_fudge: Extra inputs are not permitted (remove it" in r.stderr

    path.write_text(good.replace("  value: 0.08", "  value: -1.8", 1))
    r = cli("profiles", "validate", str(path))
    assert r.exit_code == 2 and f"{path}: compute_scale.value: Input should be greater than 0" in r.stderr

    path.write_text(good.replace("name: cpu", "name: h100-sxm"))
    r = cli("estimate", "--model", MODEL, "--hardware", HW, "--gpus", "2")
    assert r.exit_code == 2 and "name: 'h100-sxm' differs from the file name 'cpu'" in r.stderr


def test_a_changed_profile_peak_invalidates_the_calibration(profiles_dir, cli, tmp_path) -> None:
    path = _write_valid(cli, tmp_path)
    cal = load_file(path)
    hw = load_hardware(HW)
    peak = hw.bf16_dense_tflops.value
    faster = hw.model_copy(
        update={"bf16_dense_tflops": Sourced(value=2 * peak, source="re-measured", observed="2026-11-28")}
    )
    with pytest.raises(
        ProfileError, match=rf"fitted against {peak:g} TFLOP/s but the profile now says {2 * peak:g}"
    ):
        cb.apply(faster, cal)


# ----------------------------------------------------------------------------------- the commands
def test_estimate_and_plan_use_the_calibration_and_say_so(cli, profiles_dir, tmp_path) -> None:
    _write_valid(cli, tmp_path)
    args = (
        "estimate",
        "--model",
        MODEL,
        "--hardware",
        HW,
        "--gpus",
        "2",
        "--micro-batch",
        "16",
        "--grad-accum",
        "1",
        "--zero-stage",
        "2",
        "--no-grad-ckpt",  # the whole layout of _plan(): estimate would search what is left open
        "--offload-optimizer",
        "none",
        "--samples",
        "320",
    )
    calibrated = cli(*args)
    assert calibrated.exit_code == 0, calibrated.output
    assert (
        "calibration  applied" in calibrated.stdout
        and "calibration of cpu from 1 run(s) (a)" in calibrated.stdout
    )
    assert "calibrated" in calibrated.stdout and "uncalibrated" in calibrated.stdout
    plain = cli(*args, "--no-calibration")
    assert "calibration of cpu" not in plain.stdout and "uncalibrated prediction" in plain.stdout

    def step(*extra: str) -> float:
        return json.loads(cli(*args, *extra, "--format", "json").stdout)["compute"]["step_s"]

    plan_b, training_b = _plan(micro_batch=16, zero_stage=2)
    truth = _truth(plan_b, training_b, 0.08, 0.4).compute.step_s
    assert step() == pytest.approx(truth, rel=1e-6)
    assert step("--no-calibration") < 0.5 * truth
    assert "note: using the calibration of cpu" in cli(*args, "--format", "json").stderr

    planned = cli(
        "plan", "--model", MODEL, "--hardware", HW, "--gpus", "2", "--samples", "320", "--global-batch", "32"
    )
    assert planned.exit_code == 0, planned.output
    assert "note: using the calibration of cpu" in planned.stderr and "a (2×, micro-batch 4" in planned.stderr
    assert (
        "note:"
        not in cli(
            "plan",
            "--model",
            MODEL,
            "--hardware",
            HW,
            "--gpus",
            "2",
            "--samples",
            "320",
            "--global-batch",
            "32",
            "--no-calibration",
        ).stderr
    )
    # The hardware profile is still what `profiles show cpu` means.
    shown = cli("profiles", "show", HW)
    assert shown.exit_code == 0 and "display_name: CPU host" in shown.stdout


def test_calibrate_keeps_earlier_runs_unless_reset(cli, profiles_dir, tmp_path) -> None:
    _write_valid(cli, tmp_path)
    b = write_metrics(tmp_path / "b.jsonl", job="b", micro_batch=16, scale=0.08)
    r = cli("calibrate", str(b), "--hardware", HW)
    assert (
        r.exit_code == 0
        and "from 2 run(s) (a, b)" in r.stdout
        and "(1 kept from the earlier calibration)" in r.stdout
    )
    cal = load_file(profiles_dir / "calibrations" / "cpu.yaml")
    assert [x.job for x in cal.runs] == ["a", "b"] and cal.compute_scale.value == pytest.approx(
        0.08, rel=1e-6
    )
    # The earlier run is refitted from the calibration file even when its metrics file is gone.
    (tmp_path / "a.jsonl").unlink()
    again = cli("calibrate", str(b), "--hardware", HW, "--format", "json")
    assert [x["job"] for x in json.loads(again.stdout)["calibration"]["runs"]] == ["a", "b"]
    reset = cli("calibrate", str(b), "--hardware", HW, "--reset")
    assert reset.exit_code == 0 and "from 1 run(s) (b)" in reset.stdout


def test_dry_run_writes_nothing_and_reports_comm_volume(cli, profiles_dir, tmp_path) -> None:
    path = write_metrics(tmp_path / "a.jsonl", job="a", comm_bytes=3.0e6)
    r = cli("calibrate", str(path), "--hardware", HW, "--dry-run")
    assert r.exit_code == 0 and r.stdout.startswith("dry run: nothing written")
    assert "comm volume of a (DeepSpeed comms logger): 3,000,000 B/step measured vs" in r.stdout
    assert not (profiles_dir / "calibrations").exists()


def test_default_folder_is_the_user_config_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("EVAPLAN_PROFILES_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert cb.user_profiles_dir() == tmp_path / "cfg" / "evaplan" / "profiles"
    assert cb.user_profiles_dir(["/x/y"]) == Path("/x/y")
    monkeypatch.setenv("EVAPLAN_PROFILES_DIR", str(tmp_path / "p"))
    assert cb.user_profiles_dir() == tmp_path / "p"


def test_an_older_calibration_with_a_flat_mfu_still_applies(cli, profiles_dir, tmp_path) -> None:
    """Calibration files written before the per-operation model hold `mfu_default`: applied as the
    flat-MFU override they were fitted as; a file with neither factor is refused with its path."""
    path = _write_valid(cli, tmp_path)
    good = path.read_text()
    data = yaml.safe_load(good)
    scale = data.pop("compute_scale")
    data["mfu_default"] = {**scale, "value": 0.3}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cal = load_file(path)
    assert cal.compute_scale is None and "MFU 0.3 (flat override" in cal.describe()
    hw = cb.apply(load_hardware(HW), cal)
    plan, training = _plan(micro_batch=4)
    e = estimate(load_model(MODEL), hw, plan, training)
    want = e.compute.hardware_flops_per_sample * 4 / (hw.bf16_dense_tflops.value * 1e12 * 0.3)
    assert e.compute.compute_s == pytest.approx(want, rel=1e-12)
    del data["mfu_default"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    r = cli("profiles", "validate", str(path))
    assert r.exit_code == 2 and "exactly one" in r.stderr
