"""Close the loop: fit the efficiency factors the planner assumed from the trainer's measured runs,
keep them as a calibration profile of the hardware, and plan with them.

What a run measures (evaclip/metrics.py) and what it calibrates in the hardware profile:

- step time (median `step_time_s` after the warm-up steps) → `compute_scale`, one multiplier on every
  device rate the per-operation model (planner/ops.py) uses: GEMM and attention rates and the achieved
  HBM bandwidth of the memory-bound work. It is solved through the physics itself
  (planner.estimate.estimate with the profile's bus bandwidths and overlap rule), so it is the factor
  that makes the planner's *whole* step equal the measured one; with several runs, the one value that
  minimises the squared relative step-time errors over all of them. The shape dependence (micro-batch,
  widths, kernels, stack) stays the model's. A calibration file of an older evaplan holds
  `mfu_default` instead: it is applied as the flat-MFU override it was fitted as.
- with ≥ 2 runs of different micro-batch or gradient accumulation, also the fixed times the step
  model adds (planner/compute.py): `microbatch_overhead_s` (every micro-batch: kernel launches,
  Python) and, with ≥ 3 layouts that differ in gradient accumulation, `step_overhead_s` (every
  optimizer step). For a given scale the step is linear in both (communication overlaps compute only), so each
  scale tried gets its non-negative least-squares overheads; the scale search minimises what remains.
  With one run (or runs of one layout) they cannot be told apart from the scale: the derived defaults stay.
- peak memory (`peak_mem_bytes`) → `memory_reserved_gib`, the term the memory model cannot derive:
  measured − (predicted total − the profile's reserved term). On CPU the trainer reports the process's
  peak RSS, which holds the whole runtime (interpreter, libraries, allocator), so the residual replaces
  the profile's figure; on a GPU it reports `max_memory_allocated`, which does not see the CUDA/ROCm
  context or the caching allocator's slack, so the profile's figure stays a floor.
- communication (`comm_bytes`, with the DeepSpeed comms logger on) → recorded beside the bytes the
  comm model predicts for the DeepSpeed-logged collectives; a check of the volume model, not a
  bandwidth fit: one step time cannot separate compute from exposed communication, so the profile's
  measured bus bandwidths (benchmarks/measure_cpu.py, nccl-tests) stay as they are.

A calibration is a profile kind (`calibrations/<hardware>.yaml` in the user profiles folder), validated
like every profile, that lists the runs it came from with predicted and measured figures. Applying it
returns a copy of the HardwareSpec with the fitted factors (their sources name the runs), so
`estimate`, `plan` and `compare` use it without any change to the physics.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from planner.calibration_spec import CalibrationRun, CalibrationSpec
from planner.errors import EvaplanError, ProfileError
from planner.golden import minimize_log
from planner.intervals import RangeClass, TimeRange, published_compute_scale, read_cache, time_range
from planner.spec import (
    HardwareSpec,
    ModelSpec,
    ParallelPlan,
    Sourced,
    SourcedNonNegative,
    TrainingSpec,
)
from planner.units import GIB

if TYPE_CHECKING:
    from planner.estimate import Estimate

# Steps skipped at the start of a run before timing it: the first steps pay for lazy initialisation
# (allocator growth, DeepSpeed bucket set-up, gloo/NCCL connection set-up). At least 1, at most 10 %.
WARMUP_STEPS_MIN = 1
WARMUP_SHARE = 0.1
# Fewest timed steps a run must have for its median step time to mean anything.
MIN_TIMED_STEPS = 3
# The search interval of the fitted compute scale (multiplier on the modelled device rates): from a
# thousandth of the model's rates to 10× them; a run faster than 10× the model is an error in the
# profile (its peak or bandwidths), not something to fit.
SCALE_BOUNDS = (1e-3, 10.0)
CALIBRATION_KIND = "calibrations"


# ------------------------------------------------------------------------------------ where they live
def user_profiles_dir(user_dirs: Sequence[str | Path] | None = None) -> Path:
    """Where a new calibration is written: the first --profiles-dir, else the first folder of
    $EVAPLAN_PROFILES_DIR, else the user's config dir ($XDG_CONFIG_HOME or ~/.config)/evaplan/profiles."""
    from planner.profiles import ENV_VAR

    if user_dirs:
        return Path(user_dirs[0]).expanduser()
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            return Path(part).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "evaplan" / "profiles"


def _read_dirs(user_dirs: Sequence[str | Path] | None) -> list[str | Path]:
    """The folders calibrations are read from: the profile search folders, plus the default user
    folder when neither --profiles-dir nor $EVAPLAN_PROFILES_DIR names one (and it exists)."""
    from planner.profiles import ENV_VAR

    dirs = list(user_dirs or [])
    if not dirs and not os.environ.get(ENV_VAR, "").strip():
        default = user_profiles_dir(None)
        if default.is_dir():
            dirs.append(default)
    return dirs


def find_calibration(hardware: str, user_dirs: Sequence[str | Path] | None = None) -> CalibrationSpec | None:
    """The calibration of a hardware profile, or None; a malformed file is an error naming it."""
    from planner import profiles as prof

    refs = prof.index(CALIBRATION_KIND, _read_dirs(user_dirs))
    if hardware not in refs:
        return None
    cal = prof.load_file(refs[hardware].path, CALIBRATION_KIND)
    assert isinstance(cal, CalibrationSpec)
    return cal


def apply(hardware: HardwareSpec, cal: CalibrationSpec, *, path: str | None = None) -> HardwareSpec:
    """The hardware profile with the calibrated factors; refused when the profile's peak changed since."""
    where = f" ({path})" if path else ""
    if cal.hardware != hardware.name:
        raise ProfileError(
            f"calibration{where}: hardware '{cal.hardware}' is not the profile '{hardware.name}'",
            hint="rename the file after its hardware, or re-run evaplan calibrate",
        )
    if not math.isclose(cal.bf16_dense_tflops, hardware.bf16_dense_tflops.value, rel_tol=1e-9):
        raise ProfileError(
            f"calibration of {hardware.name}{where}: bf16_dense_tflops: fitted against {cal.bf16_dense_tflops:g} TFLOP/s "
            f"but the profile now says {hardware.bf16_dense_tflops.value:g}",
            hint="re-run `evaplan calibrate` on the runs, or pass --no-calibration",
        )
    upd: dict[str, Any] = {"memory_reserved_gib": cal.memory_reserved_gib}
    if cal.compute_scale is not None:
        upd["compute_scale"] = cal.compute_scale
    if cal.mfu_default is not None:
        upd["mfu_default"] = cal.mfu_default
    if cal.microbatch_overhead_s is not None:
        upd["microbatch_overhead_s"] = cal.microbatch_overhead_s
    if cal.step_overhead_s is not None:
        upd["step_overhead_s"] = cal.step_overhead_s
    return hardware.model_copy(update=upd)


def range_for(
    hardware: HardwareSpec, user_dirs: Sequence[str | Path] | None = None, cls: RangeClass | None = None
) -> TimeRange:
    """The range for a hardware profile as the planner uses it: the calibration's when one was applied
    (the profile equals the shipped one with the calibration applied), else the published runs' for
    the prediction's class (`cls`; planner/intervals.py)."""
    from planner.profiles import load_hardware

    cal = find_calibration(hardware.name, user_dirs)
    applied = False
    if cal is not None:
        try:
            applied = apply(load_hardware(hardware.name, user_dirs), cal) == hardware
        except ProfileError:  # a stale calibration (the profile's peak changed) is not applied
            applied = False
    return time_range(hardware.name, cal if applied else None, cls)


@dataclass(frozen=True)
class Calibrated:
    """A hardware profile as the planner should use it, and the calibration applied (None: none)."""

    hardware: HardwareSpec
    calibration: CalibrationSpec | None


def calibrated_hardware(
    hardware: HardwareSpec,
    user_dirs: Sequence[str | Path] | None = None,
    *,
    use: bool = True,
    published: bool = True,
) -> Calibrated:
    """What `estimate`, `plan` and `compare` call after loading a hardware profile: the user's
    calibration of it when there is one (and `use`); otherwise, for a GPU, the compute scale fitted
    on the bundled published runs and serving measurements (`published_default`; `published=False`
    leaves it out)."""
    cal = find_calibration(hardware.name, user_dirs) if use else None
    if cal is None:
        return Calibrated(published_default(hardware) if published else hardware, None)
    return Calibrated(apply(hardware, cal), cal)


def published_default(hardware: HardwareSpec) -> HardwareSpec:
    """An uncalibrated GPU profile with the compute scale `evaplan validate` fits on the fit half of
    the bundled published runs (profiles/validation_intervals.yaml): real training runs reach well
    below the modelled device rates (docs/validation.md). A profile that sets its own compute_scale
    or an mfu_default override keeps it; the `cpu` profile is measured on the machine it describes."""
    if hardware.vendor == "cpu" or hardware.compute_scale is not None or hardware.mfu_default is not None:
        return hardware
    scale = published_compute_scale()
    if scale is None:
        return hardware
    c = read_cache()
    src = (
        f"fitted by `evaplan validate` on the fit halves of the bundled published training runs "
        f"({c['fit_runs']} runs, profiles/published_runs.yaml) and serving measurements "
        "(profiles/published_serving.yaml) together (docs/validation.md): one multiplier on every "
        "modelled device rate; `evaplan calibrate` on your own runs replaces it"
    )
    observed = c["compute_scale_observed"]
    return hardware.model_copy(update={"compute_scale": Sourced(value=scale, source=src, observed=observed)})


def save(cal: CalibrationSpec, user_dirs: Sequence[str | Path] | None = None) -> Path:
    """Write calibrations/<hardware>.yaml atomically (temp file + rename) in the user profiles folder."""
    folder = user_profiles_dir(user_dirs) / CALIBRATION_KIND
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = cal.model_dump(mode="json", exclude_none=True)
        text = (
            "# Written by `evaplan calibrate`: fitted efficiency factors of one hardware profile and the\n"
            "# runs they came from (planner/calibration.py explains each figure).\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
        )
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix=f".{cal.name}.", suffix=".yaml.tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        final = folder / f"{cal.name}.yaml"
        os.replace(tmp, final)
    except OSError as e:
        raise EvaplanError(
            f"cannot write the calibration in {folder}: {e.strerror or e}",
            hint="pass --profiles-dir DIR (a writable folder) or set EVAPLAN_PROFILES_DIR",
        ) from None
    return final


# ------------------------------------------------------------------------------------ metrics
@dataclass(frozen=True)
class MeasuredRun:
    """What one metrics file says about one run (its latest start and the steps after it)."""

    path: str
    start: dict[str, Any]
    steps: list[dict[str, Any]]


def read_run(path: str | Path) -> MeasuredRun:
    """A trainer metrics file, refused with one line when it is empty, truncated or not a run's."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvaplanError(
            f"metrics file {p} does not exist", hint="give the job name or the run's metrics.jsonl"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise EvaplanError(
            f"cannot read metrics file {p}: {getattr(e, 'strerror', None) or e}", hint="check the path"
        ) from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise EvaplanError(f"metrics file {p} is empty", hint="calibrate once the run has logged some steps")
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except RecursionError:  # thousands of nested brackets: no record the trainer writes
            raise EvaplanError(
                f"metrics file {p}: line {i} nests too deeply to be a metrics record",
                hint="give the metrics.jsonl the trainer wrote (evaclip/metrics.py)",
            ) from None
        except json.JSONDecodeError:
            last = i == len(lines)
            raise EvaplanError(
                f"metrics file {p} is truncated: line {i} is not a whole JSON record"
                + (" (the last line: a process killed mid-write?)" if last else ""),
                hint="delete the broken line, or calibrate from an intact copy",
            ) from None
        if not isinstance(rec, dict) or "event" not in rec:
            raise EvaplanError(
                f"metrics file {p}: line {i} is not an evaclip metrics record (no `event`)",
                hint="give the metrics.jsonl the trainer wrote (evaclip/metrics.py)",
            )
        records.append(rec)
    starts = [k for k, r in enumerate(records) if r["event"] == "start"]
    if not starts:
        raise EvaplanError(
            f"metrics file {p} has no `start` record (truncated at the beginning?)",
            hint="give the whole metrics.jsonl the trainer wrote",
        )
    # A resumed run appends a new start: time the layout of the latest process only.
    k = starts[-1]
    start = records[k]
    steps = [r for r in records[k + 1 :] if r["event"] == "step"]
    if len(starts) > 1 and not steps:
        k = starts[-2]
        start, steps = records[k], [r for r in records[k + 1 : starts[-1]] if r["event"] == "step"]
    _check_fields(p, "the start record", start, _START_FIELDS)
    for r in steps:
        _check_fields(p, f"step record {str(r.get('step', '?'))[:20]}", r, _STEP_FIELDS)
    return MeasuredRun(str(p), start, steps)


# The keys calibration reads and the JSON type the trainer writes for each (evaclip/metrics.py).
_START_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "world_size": int,
    "micro_batch": int,
    "grad_accum": int,
    "zero_stage": int,
    "image_size": int,
    "patch_dropout": (int, float),
    "grad_ckpt": bool,
}
_STEP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "step": int,
    "step_time_s": (int, float),
    "peak_mem_bytes": (int, float),
    "peak_mem_kind": str,
}
# No number the trainer writes comes near 10^18 (bytes of an exbibyte host); a larger one (or an
# integer of 400 digits) would overflow the fit's floats.
MAX_RECORD_NUMBER = 1e18


def _check_fields(
    p: Path, what: str, rec: dict[str, Any], fields: dict[str, type | tuple[type, ...]]
) -> None:
    """Every key of `fields` present in `rec` with the type the trainer writes, numbers finite and
    below MAX_RECORD_NUMBER: one line naming the first that is not."""
    for key, kind in fields.items():
        if key not in rec:
            raise EvaplanError(
                f"metrics file {p}: {what} lacks `{key}`",
                hint="re-run with this version of evaclip (evaclip/metrics.py keys)",
            )
        v = rec[key]
        ok = isinstance(v, kind) and (kind is bool or not isinstance(v, bool))
        if ok and isinstance(v, int | float) and not isinstance(v, bool):
            ok = abs(v) <= MAX_RECORD_NUMBER and math.isfinite(v)  # the bound first: 10**400 has no float
        if not ok:
            want = {int: "a whole number", str: "a string", bool: "true or false"}.get(
                kind, "a finite number"
            )  # type: ignore[call-overload]
            if kind is int or kind == (int, float):
                want += " up to 10^18"
            raise EvaplanError(
                f"metrics file {p}: {what} has {key} {str(v)[:40]!r}, not {want}",
                hint="give the metrics.jsonl the trainer wrote (evaclip/metrics.py)",
            )


def timed_steps(run: MeasuredRun) -> list[dict[str, Any]]:
    """The step records after the warm-up (at least WARMUP_STEPS_MIN, WARMUP_SHARE of them)."""
    skip = max(WARMUP_STEPS_MIN, int(len(run.steps) * WARMUP_SHARE))
    timed = run.steps[skip:]
    if len(timed) < MIN_TIMED_STEPS:
        raise EvaplanError(
            f"metrics file {run.path} has {len(run.steps)} step record(s); calibration needs at least "
            f"{MIN_TIMED_STEPS + WARMUP_STEPS_MIN} (the first {skip} are warm-up)",
            hint="let the run log more steps (log_every_steps 1), then calibrate",
        )
    return timed


# ------------------------------------------------------------------------------------ plans
def plan_from_start(
    run: MeasuredRun, model: ModelSpec, hardware: HardwareSpec
) -> tuple[ParallelPlan, TrainingSpec]:
    """The plan a metrics file was trained with, read from its start record (no offload: the trainer
    does not log it; give the job or --plan when the run offloaded)."""
    s = run.start
    world, G = int(s["world_size"]), hardware.gpus_per_node
    if world % G:
        raise EvaplanError(
            f"metrics file {run.path}: world size {world} is not a whole number of {hardware.name} nodes ({G} per node)",
            hint="calibrate against the hardware profile the run used (--hardware)",
        )
    precision = {"bfloat16": "bf16", "float16": "fp16", "bf16": "bf16", "fp16": "fp16"}.get(
        str(s.get("precision")), "bf16"
    )
    plan = ParallelPlan(
        nodes=world // G,
        gpus_per_node=G,
        zero_stage=int(s["zero_stage"]),
        micro_batch=int(s["micro_batch"]),
        grad_accum=int(s["grad_accum"]),
        grad_ckpt=bool(s["grad_ckpt"]),
        precision=precision,
    )  # type: ignore[arg-type]
    gb = plan.global_batch
    training = TrainingSpec(
        samples=float(max(1, int(s.get("total_steps") or 1)) * gb),
        global_batch=gb,
        image_size=int(s["image_size"]),
        patch_dropout=float(s["patch_dropout"]),
        precision=precision,
    )  # type: ignore[arg-type]
    return plan, training


def check_run_matches(run: MeasuredRun, est: Estimate, hardware: HardwareSpec) -> None:
    """Refuse metrics that are not the planned run's: another model, hardware or layout."""
    s = run.start
    if s["model"] != est.model:
        raise EvaplanError(
            f"metrics file {run.path} is from model '{s['model']}', but the plan is for '{est.model}'",
            hint="give the metrics of the run launched from this plan",
        )
    if s.get("hardware") not in (None, est.hardware):
        raise EvaplanError(
            f"metrics file {run.path} is from hardware '{s['hardware']}', but the plan is for '{est.hardware}'",
            hint="give the metrics of the run launched from this plan",
        )
    p = est.plan
    for key, planned in (
        ("world_size", p.world_size),
        ("micro_batch", p.micro_batch),
        ("grad_accum", p.grad_accum),
        ("zero_stage", p.zero_stage),
        ("image_size", est.training.image_size),
        ("grad_ckpt", p.grad_ckpt),
    ):
        if s[key] != planned:
            raise EvaplanError(
                f"metrics file {run.path}: {key} {s[key]} differs from the plan's {planned}",
                hint="give the metrics of the run launched from this plan",
            )
    if hardware.name != est.hardware:
        raise EvaplanError(
            f"the plan is for hardware '{est.hardware}', not '{hardware.name}'",
            hint=f"calibrate with --hardware {est.hardware}",
        )


# ------------------------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class Observation:
    """One run ready to fit: its plan and what it measured."""

    job: str
    metrics: str
    model: ModelSpec
    plan: ParallelPlan
    training: TrainingSpec
    step_s: float
    spread: float
    steps_timed: int
    trainer_mfu: float | None
    peak_mem_bytes: float
    peak_mem_kind: str
    comm_logged_bytes: float | None


def observe(
    job: str, run: MeasuredRun, model: ModelSpec, plan: ParallelPlan, training: TrainingSpec
) -> Observation:
    import statistics

    timed = timed_steps(run)
    times = sorted(float(r["step_time_s"]) for r in timed)
    med = statistics.median(times)
    if med <= 0:
        raise EvaplanError(
            f"metrics file {run.path}: median step time is {med} s", hint="check the run's clock"
        )
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [med] * 9
    mfus = [float(r["mfu"]) for r in timed if isinstance(r.get("mfu"), int | float)]
    comm = [sum(r["comm_bytes"].values()) for r in timed if isinstance(r.get("comm_bytes"), dict)]
    kinds = {r["peak_mem_kind"] for r in timed}
    if len(kinds) != 1 or not kinds <= {"device", "host_rss"}:
        raise EvaplanError(
            f"metrics file {run.path}: peak_mem_kind {sorted(kinds)} is not one of device, host_rss",
            hint="give the metrics.jsonl the trainer wrote (evaclip/metrics.py)",
        )
    return Observation(
        job=job,
        metrics=run.path,
        model=model,
        plan=plan,
        training=training,
        step_s=med,
        spread=(q[-1] - q[0]) / med,
        steps_timed=len(timed),
        trainer_mfu=statistics.median(mfus) if mfus else None,
        peak_mem_bytes=float(max(r["peak_mem_bytes"] for r in timed)),
        peak_mem_kind=kinds.pop(),
        comm_logged_bytes=statistics.median(comm) if comm else None,
    )


# The layout a calibration run keeps (calibration_spec.CalibrationRun), named as in ParallelPlan.
_RUN_LAYOUT = (*ParallelPlan.RECORDED_LAYOUT, "offload_optimizer", "offload_param")


def observation_from_record(r: CalibrationRun, model: ModelSpec, hardware: HardwareSpec) -> Observation:
    """An earlier run of a calibration, refitted from what the calibration file kept (its metrics file
    need not exist any more)."""
    if r.model != model.name:
        raise EvaplanError(
            f"calibration run {r.job} is of model '{r.model}', not '{model.name}'",
            hint="report this: observation_from_record got the wrong model profile",
        )
    G = hardware.gpus_per_node
    if r.world_size % G:
        raise ProfileError(
            f"calibration run {r.job}: world_size {r.world_size} is not whole {hardware.name} nodes",
            hint="remove the run from the calibration file, or re-run evaplan calibrate --reset",
        )
    plan = ParallelPlan.of_recorded(r, r.world_size // G, G, fields=_RUN_LAYOUT)
    training = TrainingSpec(
        samples=float(plan.global_batch),
        global_batch=plan.global_batch,
        image_size=r.image_size,
        patch_dropout=r.patch_dropout,
    )
    return Observation(
        job=r.job,
        metrics=r.metrics,
        model=model,
        plan=plan,
        training=training,
        step_s=r.measured_step_s,
        spread=r.measured_step_spread,
        steps_timed=r.steps_timed,
        trainer_mfu=r.measured_mfu,
        peak_mem_bytes=r.measured_peak_mem_gib * GIB,
        peak_mem_kind=r.peak_mem_kind,
        comm_logged_bytes=r.comm_logged_bytes_measured,
    )


def _with(hardware: HardwareSpec, **values: float) -> HardwareSpec:
    src = "evaplan calibrate (trial value)"
    today = date.today()
    upd: dict[str, Any] = {}
    if "scale" in values:
        upd["compute_scale"] = Sourced(value=values["scale"], source=src, observed=today)
    if "reserved_gib" in values:
        upd["memory_reserved_gib"] = Sourced(value=values["reserved_gib"], source=src, observed=today)
    for key in ("microbatch_overhead_s", "step_overhead_s"):
        if key in values:
            upd[key] = SourcedNonNegative(value=values[key], source=src, observed=today)
    return hardware.model_copy(update=upd)


def predicted(obs: Observation, hardware: HardwareSpec) -> Estimate:
    from planner.estimate import estimate

    return estimate(obs.model, hardware, obs.plan, obs.training)


@dataclass(frozen=True)
class StepFit:
    """The fitted step-time factors; an overhead of None was not fitted (the derived default stays)."""

    scale: float
    microbatch_overhead_s: float | None = None
    step_overhead_s: float | None = None


def fitted_overheads(observations: Sequence[Observation]) -> tuple[str, ...]:
    """Which overheads the runs can tell apart from the compute scale: the per-micro-batch one needs two layouts
    (micro-batch or gradient accumulation); the per-step one a third layout and two gradient
    accumulations (with grad_accum fixed it is the same per-step constant as the micro-batch one)."""
    layouts = len({(o.plan.micro_batch, o.plan.grad_accum) for o in observations})
    if layouts < 2:
        return ()
    if layouts < 3 or len({o.plan.grad_accum for o in observations}) < 2:
        return ("microbatch_overhead_s",)
    return ("microbatch_overhead_s", "step_overhead_s")


def _nonnegative_lstsq(
    columns: dict[str, list[float]], target: list[float]
) -> tuple[dict[str, float], float]:
    """min ‖Σ x_k·column_k − target‖² over x ≥ 0, by trying every subset of free columns (at most 2)."""
    import numpy as np  # here, not at import: `estimate` reads calibrations but never fits one

    best: tuple[dict[str, float], float] = ({k: 0.0 for k in columns}, sum(t * t for t in target))
    names = list(columns)
    for mask in range(1, 2 ** len(names)):
        free = [k for i, k in enumerate(names) if mask >> i & 1]
        a = np.array([columns[k] for k in free]).T
        x, *_ = np.linalg.lstsq(a, np.array(target), rcond=None)
        if np.any(x < 0):
            continue
        r = a @ x - np.array(target)
        loss = float(r @ r)
        if loss < best[1]:
            best = ({k: (float(x[free.index(k)]) if k in free else 0.0) for k in names}, loss)
    return best


def fit_step(observations: Sequence[Observation], hardware: HardwareSpec) -> StepFit:
    """Compute scale and, when the runs allow it (`fitted_overheads`), the overheads, minimising
    Σ ((predicted − measured) / measured)² through the planner's own step model."""
    which = fitted_overheads(observations)
    if not which:
        return StepFit(fit_scale(observations, hardware))
    zero = {k: 0.0 for k in which}

    def inner(log_scale: float) -> tuple[dict[str, float], float]:
        # The step without the fitted overheads; they add gas·m + s to it (linear in both).
        hw = _with(hardware, scale=math.exp(log_scale), **zero)
        base = [predicted(o, hw).compute.step_s for o in observations]
        per = {"microbatch_overhead_s": lambda o: o.plan.grad_accum, "step_overhead_s": lambda o: 1}
        cols = {k: [per[k](o) / o.step_s for o in observations] for k in which}
        target = [(o.step_s - b) / o.step_s for o, b in zip(observations, base, strict=True)]
        return _nonnegative_lstsq(cols, target)

    try:
        scale = _golden_log_scale(lambda ls: inner(ls)[1], observations, hardware)
    except EvaplanError:
        # The runs' step times barely grow with the work (a fixed cost dominates, as on a busy CPU):
        # the joint fit explains everything by the overheads and drives the scale to its bound.
        # Those runs cannot separate the two, so fit the scale alone (it raises if even that fails).
        return StepFit(fit_scale(observations, hardware))
    x, _ = inner(math.log(scale))
    return StepFit(scale, x.get("microbatch_overhead_s"), x.get("step_overhead_s"))


def fit_scale(observations: Sequence[Observation], hardware: HardwareSpec) -> float:
    """The compute scale that minimises Σ ((predicted − measured) / measured)² over the runs,
    predicted by the planner's own step model (compute + overheads + exposed comm + offload). The
    step time falls monotonically as the scale rises, so each run alone has one root; a
    golden-section search on log(scale) finds the common optimum."""

    def loss(log_scale: float) -> float:
        hw = _with(hardware, scale=math.exp(log_scale))
        return sum(((predicted(o, hw).compute.step_s - o.step_s) / o.step_s) ** 2 for o in observations)

    return _golden_log_scale(loss, observations, hardware)


def _golden_log_scale(
    loss: Callable[[float], float], observations: Sequence[Observation], hardware: HardwareSpec
) -> float:
    """The minimising scale within SCALE_BOUNDS; refused when the runs push it to the upper bound."""
    scale = minimize_log(loss, SCALE_BOUNDS, 80)
    if scale >= SCALE_BOUNDS[1] * 0.999:
        worst = min(observations, key=lambda o: o.step_s)
        raise EvaplanError(
            f"run {worst.job} ran faster than the planner's step at {SCALE_BOUNDS[1]:g}× the modelled rates of "
            f"{hardware.name} ({worst.step_s:.4g} s measured)",
            hint="the profile's peak or bus bandwidths are too low: re-measure them (benchmarks/measure_cpu.py, "
            "nccl-tests), then calibrate",
        )
    return scale


def fit_reserved_gib(observations: Sequence[Observation], hardware: HardwareSpec) -> float:
    """Runtime memory the model cannot derive: measured peak − (predicted total − reserved term), the
    largest over the runs (planning with it never under-counts a measured run). From device-allocated
    figures the profile's figure is a floor (the context is not in max_memory_allocated)."""
    residuals = []
    floor = 0.0
    for o in observations:
        e = predicted(o, hardware)
        derived = e.memory.gpu_total_bytes - e.memory.gpu_terms["runtime_reserved"]
        residuals.append((o.peak_mem_bytes - derived) / GIB)
        if o.peak_mem_kind == "device":
            floor = hardware.memory_reserved_gib.value
    value = max(max(residuals), floor)
    if value <= 0:
        # The model over-counts what the run used; keep a token positive reserve (Sourced is > 0).
        value = 1.0 / 1024
    return value


def _ds_logged_bytes(e: Estimate) -> float:
    return sum(c.logged_bytes for c in e.comm.collectives if c.ds_logged)


def calibrate(
    observations: Sequence[Observation], hardware: HardwareSpec, *, now: datetime | None = None
) -> CalibrationSpec:
    """Fit the calibration of `hardware` (the profile as shipped, uncalibrated) from the runs."""
    if not observations:
        raise EvaplanError("no runs to calibrate from", hint="give a job name or a metrics.jsonl")
    now = now or datetime.now(timezone.utc)
    sf = fit_step(observations, hardware)
    scale = sf.scale
    reserved = fit_reserved_gib(observations, hardware)
    over = {
        k: v
        for k, v in (
            ("microbatch_overhead_s", sf.microbatch_overhead_s),
            ("step_overhead_s", sf.step_overhead_s),
        )
        if v is not None
    }
    fitted = _with(hardware, scale=scale, reserved_gib=reserved, **over)
    runs = []
    for o in observations:
        before, after = predicted(o, hardware), predicted(o, fitted)
        runs.append(
            CalibrationRun(
                job=o.job,
                metrics=o.metrics,
                model=o.model.name,
                observed=now.date(),
                world_size=o.plan.world_size,
                **{k: getattr(o.plan, k) for k in _RUN_LAYOUT},
                image_size=o.training.image_size,
                patch_dropout=o.training.patch_dropout,
                steps_timed=o.steps_timed,
                measured_step_s=o.step_s,
                measured_step_spread=o.spread,
                measured_mfu=o.trainer_mfu,
                uncalibrated_step_s=before.compute.step_s,
                calibrated_step_s=after.compute.step_s,
                measured_peak_mem_gib=o.peak_mem_bytes / GIB,
                peak_mem_kind=o.peak_mem_kind,  # type: ignore[arg-type]
                uncalibrated_mem_gib=before.memory.gpu_total_bytes / GIB,
                comm_logged_bytes_measured=o.comm_logged_bytes,
                comm_logged_bytes_predicted=_ds_logged_bytes(before)
                if o.comm_logged_bytes is not None
                else None,
            )
        )
    jobs = ", ".join(o.job for o in observations)
    day = now.date()
    how = {
        "microbatch_overhead_s": "fixed time per micro-batch",
        "step_overhead_s": "fixed time per optimizer step",
    }
    overheads = {
        k: SourcedNonNegative(
            value=v,
            observed=day,
            source=f"evaplan calibrate: {how[k]} fitted with the compute scale (non-negative least squares of relative step-time "
            f"errors) over {len(observations)} run(s) ({jobs})",
        )
        for k, v in over.items()
    }
    return CalibrationSpec(
        name=hardware.name,
        hardware=hardware.name,
        fitted_at=now,
        bf16_dense_tflops=hardware.bf16_dense_tflops.value,
        compute_scale=Sourced(
            value=scale,
            observed=day,
            source=f"evaplan calibrate: multiplier on the modelled device rates that makes the planner's step match "
            f"the median measured step of {len(observations)} run(s) ({jobs}) (least squares of relative errors)",
        ),
        memory_reserved_gib=Sourced(
            value=reserved,
            observed=day,
            source=f"evaplan calibrate: measured peak memory − the memory model's derived terms, largest over "
            f"{len(observations)} run(s) ({jobs})",
        ),
        **overheads,
        runs=runs,
    )


def comparison_rows(cal: CalibrationSpec) -> list[dict[str, str]]:
    """Predicted vs measured for every run behind a calibration (what the reports print)."""
    rows = []
    for r in cal.runs:

        def err(pred: float, meas: float) -> str:
            return f"{(pred - meas) / meas:+.1%}"

        rows.append(
            {
                "run": r.job,
                "layout": f"{r.world_size}×, micro-batch {r.micro_batch}, accum {r.grad_accum}, ZeRO-{r.zero_stage}"
                + (", ckpt" if r.grad_ckpt else ""),
                "measured step": f"{r.measured_step_s:.4g} s (±{r.measured_step_spread / 2:.0%})",
                "uncalibrated": f"{r.uncalibrated_step_s:.4g} s ({err(r.uncalibrated_step_s, r.measured_step_s)})",
                "calibrated": f"{r.calibrated_step_s:.4g} s ({err(r.calibrated_step_s, r.measured_step_s)})",
                "memory measured / predicted": f"{r.measured_peak_mem_gib:.3g} / {r.uncalibrated_mem_gib:.3g} GiB "
                f"({r.peak_mem_kind})",
            }
        )
    return rows
