"""Published vs predicted: the planner run on every bundled published run (planner/published.py).

For each run the public estimate API (planner.estimate.estimate) is called with the run's layout, and
its figures are set beside the published ones: samples/s per GPU, wall time, GPU-hours, per-GPU memory
and whether the layout fits (every published run trained, so it must be predicted to fit).
Error = predicted / published − 1 (positive: evaplan too optimistic about speed, or too high on time).

Fit and held-out halves. What this module fits from the data is fitted on at most half of the runs
and reported on the others separately: the runs are split deterministically (per kind — throughput
runs and fit-only layouts — sorted by the SHA-256 of their names, the first ⌊n/2⌋ of each kind
fitted). Two quantities are fitted, both global (no per-run factors):
- the prediction interval of time and money: the 10th and 90th percentiles of the ratio
  published time / predicted time (= predicted samples/s / published samples/s) over the fit half;
  the held-out half reports how many of its runs fall inside (coverage);
- the activation memory factor (planner/memory.py ACTIVATION_MEMORY_FACTOR): measured activation
  bytes over the tensor count, from the fit half's measured allocator peaks; the held-out peaks are
  the check.
The runtime reserve is only bounded, not fitted: the largest per-GPU reserve with which every fit-half
layout that trained still fits (HBM − predicted total without the reserve, the smallest over those
runs); the held-out layouts are checked with the hardware profiles as shipped.

What no layout-only model can fit: runs whose model inputs are identical (`model_inputs`: model,
hardware, GPUs, micro-batch, accumulation, ZeRO stage, checkpointing, patch dropout, precision, stack,
attention, loader workers, image size) get one and the same prediction p, so if their published
samples/s differ, some error is unavoidable. With error p/a − 1, the worst |error| over a group with
published a_min … a_max is smallest at p = 2·a_min·a_max/(a_min + a_max), where it is
(a_max − a_min)/(a_max + a_min) (`min_worst_abs_error`); the largest such value over all groups is a
floor under "worst |error|" for any model that sees only these inputs (`indistinguishable_groups`).

The intervals that `estimate`, `plan` and `compare` print come from a small committed cache of these
numbers (profiles/validation_intervals.yaml, see planner/intervals.py): regenerate it with
`python -m planner.validation --write-intervals` whenever the model or the data changes (a test
fails on drift).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from planner import profiles as prof
from planner import serving_validation as sv
from planner.errors import EvaplanError, ProfileError
from planner.estimate import Estimate, estimate
from planner.golden import minimize_log_scanned
from planner.gpu_ratios import RatioCheck, layout_run, ratio_uncertainty
from planner.halves import (
    HALVES,
    SCALE_BOUNDS,
    ClassRange,
    ErrorStats,
    Intervals,
    _hash,  # noqa: F401  (re-exported: tests/planner/test_serving_validation.py reads it here)
    fit_class_ranges,
    quantile,
    split_halves,
    stats,
)
from planner.intervals import (
    BINDINGS,
    MIN_COMPARABLE_RUNS,
    REGENERATE,
    RangeClass,
    binding_from,
    cache_path,
    read_cache,
    size_class,
)
from planner.published import PublishedRun, load_runs
from planner.published_ratios import PublishedRatio, load_ratios
from planner.spec import HardwareSpec, ModelSpec, ParallelPlan, TrainingSpec
from planner.units import GIB


@dataclass(frozen=True)
class RunCheck:
    """One published run beside the planner's prediction for it."""

    run: PublishedRun
    half: str  # "fit" | "held-out"
    estimate: Estimate
    compute_scale: float | None = None  # the published-runs scale the prediction used (None: raw)

    @property
    def fits(self) -> bool:
        return self.estimate.fits

    @property
    def predicted_sps_per_gpu(self) -> float:
        return self.estimate.compute.samples_per_s / self.run.gpus

    @property
    def published_sps_per_gpu(self) -> float | None:
        s = self.run.published_samples_per_s
        return None if s is None else s / self.run.gpus

    @property
    def predicted_wall_h(self) -> float | None:
        return self.estimate.time.wall_s / 3600.0 if self.run.samples is not None else None

    @property
    def predicted_gpu_h(self) -> float | None:
        w = self.predicted_wall_h
        return None if w is None else w * self.run.gpus

    @property
    def reserve_gib(self) -> float:
        return self.estimate.memory.gpu_terms["runtime_reserved"] / GIB

    @property
    def predicted_memory_gib(self) -> float:
        """Per-GPU total; without the runtime reserve when the published peak is the allocator's."""
        total = self.estimate.memory.gpu_total_bytes / GIB
        if self.run.published.memory_kind == "allocated":
            return total - self.reserve_gib
        return total

    @property
    def headroom_without_reserve_gib(self) -> float:
        """HBM − (predicted total − reserve): the most reserve this layout leaves room for."""
        m = self.estimate.memory
        return (m.hbm_bytes - m.gpu_total_bytes) / GIB + self.reserve_gib

    def errors(self) -> dict[str, float | None]:
        """predicted / published − 1 for each published figure."""
        p = self.run.published
        return {
            "samples_per_s_per_gpu": _err(self.predicted_sps_per_gpu, self.published_sps_per_gpu),
            "wall_hours": _err(self.predicted_wall_h, p.wall_hours),
            "gpu_hours": _err(self.predicted_gpu_h, p.gpu_hours),
            "memory_gib": _err(self.predicted_memory_gib, p.peak_memory_gib),
        }

    @property
    def time_ratio(self) -> float | None:
        """published time / predicted time for the same samples (predicted / published samples/s)."""
        pub = self.published_sps_per_gpu
        return None if pub is None else self.predicted_sps_per_gpu / pub


def _err(pred: float | None, pub: float | None) -> float | None:
    if pred is None or pub is None:
        return None
    return pred / pub - 1.0


def _hardware_for(run: PublishedRun, hardware: HardwareSpec) -> HardwareSpec:
    """A run on fewer GPUs than a full node (one GPU of a lent machine) is a node of that many GPUs."""
    if run.gpus < hardware.gpus_per_node:
        return hardware.model_copy(update={"gpus_per_node": run.gpus})
    return hardware


def run_model(run: PublishedRun) -> ModelSpec:
    """The run's model profile stepping the optimizer the run stepped: its stated `optimizer`, else the
    recipe's. An AdamW implementation (`optimizer_impl`) on a run that steps another optimizer is
    refused naming the run, as `--optimizer-impl` is on such a model (ops.optimizer_impl_refusal)."""
    model = prof.load_model(run.model)
    if run.optimizer is not None:
        model = model.stepping(run.optimizer.value)
    if run.optimizer_impl is not None and model.recipe.optimizer != "adamw":
        raise ProfileError(
            f"published run {run.name}: optimizer_impl {run.optimizer_impl.value} says how torch's AdamW ran, "
            f"but the run steps {model.recipe.optimizer} "
            + ("(its `optimizer`)" if run.optimizer is not None else f"(model {run.model}'s recipe)"),
            hint="state the optimizer the run stepped (`optimizer: {value: adamw, ...}`) or drop optimizer_impl",
        )
    return model


def plan_for(run: PublishedRun, hardware: HardwareSpec) -> tuple[ParallelPlan, TrainingSpec, dict[str, Any]]:
    """The run's layout in the planner's terms; the software stack and attention kernel are passed to
    whichever of ParallelPlan and TrainingSpec has the field, so the data file serves any planner version."""
    model = run_model(run)
    image_size = run.image_size or model.recipe.image_size
    G = hardware.gpus_per_node
    # The software stack and attention kernel go to whichever spec has the field (planner versions differ).
    # A run that does not name its kernel used the official run's: the model profile's `xattn`.
    wanted = {"stack": run.stack, "attention": run.attention or model.official_attention}
    plan_extra = {k: v for k, v in wanted.items() if v is not None and k in ParallelPlan.model_fields}
    plan = ParallelPlan.of_recorded(run, max(1, run.gpus // G), G, precision=run.precision, **plan_extra)
    extra = {k: v for k, v in wanted.items() if v is not None and k in TrainingSpec.model_fields}
    # A run that does not state its DataLoader workers is read as using every core of a GPU's share
    # of the node (the optimistic reading: its loaders are never slower than that).
    every_core = max(1, int(hardware.host_cpu_cores.value // G))
    training = TrainingSpec(
        samples=run.samples or float(run.global_batch),
        global_batch=run.global_batch,
        image_size=image_size,
        patch_dropout=run.patch_dropout,
        precision=run.precision,
        loader_workers=run.loader_workers.value if run.loader_workers is not None else every_core,
        optimizer_impl=run.optimizer_impl.value if run.optimizer_impl is not None else None,
        **extra,
    )
    return plan, training, {**plan_extra, **extra}


def check_run(run: PublishedRun, half: str, compute_scale: float | None = None) -> RunCheck:
    """The planner's prediction for a published run: the raw per-operation model (`compute_scale`
    None), or with the device rates scaled by `compute_scale` (the published-runs default)."""
    model = run_model(run)
    hardware = _hardware_for(run, prof.load_hardware(run.hardware))
    if compute_scale is not None:
        hardware = hardware.model_copy(update={"compute_scale": _scale_figure(compute_scale)})
    if run.gpus % hardware.gpus_per_node:
        raise ProfileError(
            f"published run {run.name}: {run.gpus} GPUs is not a whole number of {hardware.name} nodes "
            f"({hardware.gpus_per_node} GPUs each)",
            hint="leave the run out, or record it on a hardware profile with that node size",
        )
    plan, training, _ = plan_for(run, hardware)
    return RunCheck(run, half, estimate(model, hardware, plan, training), compute_scale)


def check_ratios(compute_scale: float | None, path: str | None = None) -> list[RatioCheck]:
    """Every published GPU ratio (profiles/published_ratios.yaml) beside the model's at the row's CLIP
    layout, each GPU predicted as a published run is (`compute_scale`: the fitted published-runs scale)."""
    return [check_ratio(row, compute_scale) for row in load_ratios(path).ratios]


def check_ratio(row: PublishedRatio, compute_scale: float | None) -> RatioCheck:
    """One published GPU ratio beside the model's at the row's CLIP layout, each GPU predicted as a
    published run is."""
    num, den = (
        check_run(layout_run(row, hw), "ratio", compute_scale).estimate.compute.samples_per_s
        for hw in (row.numerator, row.denominator)
    )
    return RatioCheck(row, num, den)


def check_all(
    path: str | None = None,
    compute_scale: float | str | None = "fitted",
    serving_path: str | None = None,
) -> list[RunCheck]:
    """Every published run beside the planner's prediction. By default the prediction the product
    makes: the per-operation model with the compute scale fitted once on the fit halves of the
    training runs and the serving measurements together (`fit_compute_scale`; `serving_path`: the
    measurements' file, default the bundled one); `compute_scale=None` gives the raw model."""
    runs = load_runs(path).runs
    halves = split_halves(runs)
    if compute_scale == "fitted":
        compute_scale = fit_compute_scale([check_run(r, halves[r.name]) for r in runs], serving_path)
    assert compute_scale is None or isinstance(compute_scale, float)
    return [check_run(r, halves[r.name], compute_scale) for r in runs]


# The published runs are far slower than the per-operation model's device rates predict (data
# loaders, interconnect, framework overheads none of the bundled runs state). One global multiplier
# on every modelled device rate, the same quantity `evaplan calibrate` fits on a user's own runs,
# is fitted on the fit half only (never per run, SCALE_BOUNDS: planner/halves.py) and judged on the
# held-out half.


def _scale_figure(value: float):  # -> Sourced
    from planner.spec import Sourced

    return Sourced(
        value=value,
        source="fitted by evaplan validate on the fit halves of profiles/published_runs.yaml and "
        "profiles/published_serving.yaml together (median |log predicted/published|; docs/validation.md)",
        observed=newest_fit_source(),
    )


def newest_fit_source() -> date:
    """The newest source date in the fit halves of the bundled runs and serving measurements: the
    `observed` date of what is fitted on them (a held-out row's date must not move it any more than
    its figures)."""
    runs = load_runs().runs
    halves = split_halves(runs)
    dates = [r.source_date for r in runs if halves[r.name] == "fit"]
    return max(dates + [m.source_date for m in sv.fit_half_measurements()])


def _no_fit_half() -> EvaplanError:
    return EvaplanError(
        "no run of the fit half has a published throughput (wall hours or GPU-hours) to fit to",
        hint="give --runs a file with more runs that publish their time (the bundled one has "
        "them in both halves)",
    )


# fit_compute_scale re-predicts every fit row at about 40 trial scales: seconds of work, repeated whenever
# one process fits the same inputs again (validate's table, JSON and CSV in one session; the test
# suite's many in-process `evaplan validate` calls). The result is kept per key of everything the fit
# reads: every row it is given with its half (held-out rows too, so a changed held-out figure is a
# fresh fit and never a kept answer), the serving fit half, and which profile files the rows' names
# resolve to (a profile file is read once per process by path, planner/profiles.py `_load_cached`).
_FITTED_SCALES: dict[tuple[Any, ...], float] = {}


def _fit_key(raw: Sequence[RunCheck], serving: Sequence[Any]) -> tuple[Any, ...]:
    profiles = tuple(
        (kind, tuple((name, str(ref.path)) for name, ref in prof.index(kind).items()))
        for kind in ("models", "hardware", "calibrations")
    )
    return (
        tuple((c.half, c.run.model_dump_json()) for c in raw),
        tuple(m.model_dump_json() for m in serving),
        profiles,
    )


def fit_compute_scale(raw: Sequence[RunCheck], serving_path: str | None = None) -> float:
    """The one compute scale of the time model (issue 21 item 1): it minimises the median
    |log(predicted / published)| over the fit half of the training runs (samples/s) and the fit half
    of the serving measurements (images/s, planner/serving_validation.py) together, one vote per run
    or measurement (a robust centre: a few data-loader-bound runs do not pull it), by golden-section
    search on log(scale). No held-out figure of either enters it. Re-predicts each fit row at each
    trial scale: step and batch times are not proportional to it (host time, communication and data
    loading do not scale)."""
    fit = [c for c in raw if c.half == "fit" and c.published_sps_per_gpu is not None]
    if not fit:
        raise _no_fit_half()
    serving = sv.fit_half_measurements(serving_path)
    key = _fit_key(raw, serving)
    if key in _FITTED_SCALES:
        return _FITTED_SCALES[key]

    def loss(log_scale: float) -> float:
        errs = []
        for c in fit:
            chk = check_run(c.run, c.half, math.exp(log_scale))
            errs.append(abs(math.log(chk.predicted_sps_per_gpu / c.published_sps_per_gpu)))
        checks = [sv.check_measurement(m, "fit", math.exp(log_scale)) for m in serving]
        errs += [abs(e) for e in sv.fit_half_log_errors(checks)]
        return quantile(errs, 0.5)

    # The pooled median is jagged (training and serving rows disagree): 25 log-spaced trials over
    # the bounds (steps of 15 %), then 16 golden-section steps in the best trial's bracket (to about
    # 0.01 % of the scale).
    _FITTED_SCALES[key] = round(minimize_log_scanned(loss, SCALE_BOUNDS, 25, 16), 4)
    return _FITTED_SCALES[key]


# ------------------------------------------------------------------------ irreducible spread
def model_inputs(run: PublishedRun) -> tuple[Any, ...]:
    """Everything the estimator sees of a run that bears on its samples/s: two runs with equal keys get
    the same prediction. `samples` is left out: it sets the wall time, not samples/s (a test checks)."""
    model = run_model(run)
    image_size = run.image_size or model.recipe.image_size
    workers = run.loader_workers.value if run.loader_workers is not None else None
    return (
        run.model,
        run.hardware,
        run.gpus,
        run.micro_batch,
        run.grad_accum,
        run.zero_stage,
        run.grad_ckpt,
        run.patch_dropout,
        run.precision,
        run.stack,
        run.attention,
        model.recipe.optimizer,
        run.optimizer_impl.value if run.optimizer_impl is not None else None,
        workers,
        image_size,
    )


def min_worst_abs_error(published: Sequence[float]) -> tuple[float, float]:
    """(smallest worst |p/a − 1| one prediction p can reach over published values a, that p).
    The worst error is at a_min (too high) or a_max (too low); balancing p/a_min − 1 = 1 − p/a_max
    gives p = 2·a_min·a_max/(a_min + a_max) and the error (a_max − a_min)/(a_max + a_min)."""
    if not published or min(published) <= 0:
        raise ValueError("published values must be positive and at least one")
    lo, hi = min(published), max(published)
    return (hi - lo) / (hi + lo), 2.0 * lo * hi / (lo + hi)


@dataclass(frozen=True)
class SpreadGroup:
    """Runs with identical model inputs whose published samples/s per GPU differ."""

    runs: tuple[str, ...]
    halves: tuple[str, ...]
    published: tuple[float, ...]  # samples/s per GPU, in the order of `runs`
    predicted: float  # the one prediction the model makes for all of them
    best_prediction: float  # the single prediction with the smallest worst |error|
    min_worst_abs_error: float


def indistinguishable_groups(checks: Sequence[RunCheck], half: str = "all") -> list[SpreadGroup]:
    """Groups (of `half`'s runs with a published samples/s) whose inputs match and figures differ,
    the widest spread first."""
    by_key: dict[tuple[Any, ...], list[RunCheck]] = {}
    for c in checks:
        if half in ("all", c.half) and c.published_sps_per_gpu is not None:
            by_key.setdefault(model_inputs(c.run), []).append(c)
    groups = []
    for members in by_key.values():
        pub = [c.published_sps_per_gpu for c in members]
        if len(members) < 2 or max(pub) == min(pub):
            continue
        floor, best = min_worst_abs_error(pub)
        groups.append(
            SpreadGroup(
                tuple(c.run.name for c in members),
                tuple(c.half for c in members),
                tuple(pub),
                members[0].predicted_sps_per_gpu,
                best,
                floor,
            )
        )
    return sorted(groups, key=lambda g: -g.min_worst_abs_error)


def worst_error_floor(groups: Sequence[SpreadGroup]) -> float:
    """The least worst |error| any model that sees only the runs' inputs can reach: 0 without groups."""
    return max((g.min_worst_abs_error for g in groups), default=0.0)


# ------------------------------------------------------------------------------------------ summary
def run_class(c: RunCheck) -> RangeClass:
    """A checked run's class, as the CLI classes a prediction (planner/intervals.py range_class)."""
    e = c.estimate
    return RangeClass(
        binding_from(e.compute.data_loading_s, e.compute.step_s), size_class(e.params.total), c.run.stack
    )


def fit_intervals(checks: Sequence[RunCheck]) -> Intervals:
    """Every class's range from the comparable fit-half runs, and the held-out runs' coverage."""
    fit = [(run_class(c), c.time_ratio) for c in checks if c.half == "fit" and c.time_ratio is not None]
    if not fit:
        raise _no_fit_half()
    held = [(run_class(c), c.time_ratio) for c in checks if c.half == "held-out" and c.time_ratio is not None]
    return fit_class_ranges(fit, held, BINDINGS, "every fit-half run")


def fit_activation_factor(checks: Sequence[RunCheck], half: str = "fit") -> tuple[float, int]:
    """Measured activation memory over the tensor count, from the runs of `half` with an allocator peak:
    (published − predicted non-activation bytes) / predicted activations at factor 1, their mean.
    Returns (factor rounded to 3 decimals, runs used)."""
    from planner.memory import ACTIVATION_MEMORY_FACTOR

    ks = []
    for c in checks:
        p = c.run.published
        if c.half != half or p.peak_memory_gib is None or p.memory_kind != "allocated":
            continue
        t = c.estimate.memory.gpu_terms
        act = (t["activations_vision"] + t["activations_text"]) / GIB
        other = c.predicted_memory_gib - act
        ks.append((p.peak_memory_gib - other) / (act / ACTIVATION_MEMORY_FACTOR))
    if not ks:
        raise ValueError(f"no measured allocator peak in the {half} half")
    return round(statistics.fmean(ks), 3), len(ks)


def reserve_bound_gib(checks: Sequence[RunCheck], half: str = "fit") -> tuple[float, str]:
    """The largest runtime reserve with which every trained layout of `half` fits, and that run."""
    trained = [c for c in checks if c.half == half and c.run.published.trained]
    worst = min(trained, key=lambda c: c.headroom_without_reserve_gib)
    return worst.headroom_without_reserve_gib, worst.run.name


@dataclass(frozen=True)
class Summary:
    by_metric: dict[str, dict[str, ErrorStats]]  # metric → {"all", "fit", "held-out"} → stats
    fits: dict[str, tuple[int, int]]  # half → (predicted to fit, trained)
    not_fitting: list[str]
    intervals: Intervals
    reserve_bound_gib: float
    reserve_bound_run: str
    activation_factor: float
    activation_factor_runs: int
    compute_scale: float | None = None  # fitted on the fit half; None: the raw model was checked
    spread_groups: tuple[SpreadGroup, ...] = ()  # all runs: identical inputs, different samples/s
    worst_error_floor: dict[str, float] | None = None  # half → least reachable worst |error|
    gpu_ratios: tuple[RatioCheck, ...] = ()  # published GPU ratios beside the model's
    serving_intervals: Intervals | None = None  # serve's ranges, from the published inference measurements


METRICS = ("samples_per_s_per_gpu", "wall_hours", "gpu_hours", "memory_gib")


def summarize(
    checks: Sequence[RunCheck], ratios_path: str | None = None, serving_path: str | None = None
) -> Summary:
    by_metric: dict[str, dict[str, ErrorStats]] = {}
    for m in METRICS:
        by_metric[m] = {}
        for half in ("all", "fit", "held-out"):
            vals = [
                e
                for c in checks
                if half in ("all", c.half) and (e := c.errors()[m]) is not None and math.isfinite(e)
            ]
            by_metric[m][half] = stats(vals)
    fits: dict[str, tuple[int, int]] = {}
    for half in ("all", "fit", "held-out"):
        trained = [c for c in checks if half in ("all", c.half) and c.run.published.trained]
        fits[half] = (sum(c.fits for c in trained), len(trained))
    bound, run = reserve_bound_gib(checks)
    k, k_runs = fit_activation_factor(checks)
    floors = {h: worst_error_floor(indistinguishable_groups(checks, h)) for h in ("all", "fit", "held-out")}
    return Summary(
        by_metric,
        fits,
        [c.run.name for c in checks if c.run.published.trained and not c.fits],
        fit_intervals(checks),
        bound,
        run,
        k,
        k_runs,
        checks[0].compute_scale if checks else None,
        tuple(indistinguishable_groups(checks)),
        floors,
        tuple(check_ratios(checks[0].compute_scale if checks else None, ratios_path)),
        # serve's predictions as `evaplan serve` makes them: at the one compute scale of both workloads
        sv.fit_serving_intervals(
            sv.serving_checks(checks[0].compute_scale if checks else None, serving_path)
        ),
    )


# ------------------------------------------------------------------------------------------ rows
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0%}"


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def run_rows(checks: Sequence[RunCheck]) -> list[dict[str, Any]]:
    """One row per run: raw numbers with units in the column names (JSON/CSV) ..."""
    group_of = {
        name: (i, g) for i, g in enumerate(indistinguishable_groups(checks), start=1) for name in g.runs
    }
    rows = []
    for c in checks:
        grp = group_of.get(c.run.name)
        e = c.errors()
        r = c.run
        rows.append(
            {
                "run": r.name,
                "half": c.half,
                "model": r.model,
                "hardware": r.hardware,
                "gpus": r.gpus,
                "micro_batch": r.micro_batch,
                "zero_stage": r.zero_stage,
                "grad_ckpt": r.grad_ckpt,
                "precision": r.precision,
                "stack": r.stack,
                "published_samples_per_s_per_gpu": c.published_sps_per_gpu,
                "predicted_samples_per_s_per_gpu": c.predicted_sps_per_gpu,
                "samples_per_s_error": e["samples_per_s_per_gpu"],
                "published_wall_hours": r.published.wall_hours,
                "predicted_wall_hours": c.predicted_wall_h,
                "wall_hours_error": e["wall_hours"],
                "published_gpu_hours": r.published.gpu_hours,
                "predicted_gpu_hours": c.predicted_gpu_h,
                "gpu_hours_error": e["gpu_hours"],
                "published_memory_gib": r.published.peak_memory_gib,
                "predicted_memory_gib": c.predicted_memory_gib,
                "memory_error": e["memory_gib"],
                "trained": r.published.trained,
                "predicted_fits": c.fits,
                "loader_workers": r.loader_workers.value if r.loader_workers is not None else None,
                "optimizer_impl": r.optimizer_impl.value if r.optimizer_impl is not None else None,
                "same_inputs_group": grp[0] if grp else None,
                "same_inputs_min_worst_abs_error": grp[1].min_worst_abs_error if grp else None,
                "source_url": r.source_url,
                "source_date": r.source_date.isoformat(),
            }
        )
    return rows


def table_rows(checks: Sequence[RunCheck]) -> list[dict[str, str]]:
    """... and the readable table: published → predicted (error) per figure."""
    rows = []
    for c in checks:
        e = c.errors()
        r = c.run
        pub = c.published_sps_per_gpu
        mem = r.published.peak_memory_gib
        rows.append(
            {
                "run": r.name,
                "half": c.half,
                "GPUs": f"{r.gpus} {r.hardware}",
                "samples/s/GPU": "-"
                if pub is None
                else f"{pub:,.1f} → {c.predicted_sps_per_gpu:,.1f} ({_pct(e['samples_per_s_per_gpu'])})",
                "wall h": "-"
                if r.published.wall_hours is None
                else f"{r.published.wall_hours:,.0f} → {c.predicted_wall_h:,.1f} ({_pct(e['wall_hours'])})",
                "GPU-h": "-"
                if r.published.gpu_hours is None
                else f"{r.published.gpu_hours:,.0f} → {_num(c.predicted_gpu_h)} ({_pct(e['gpu_hours'])})",
                "memory GiB": "-"
                if mem is None
                else f"{mem:.1f} → {c.predicted_memory_gib:.1f} ({_pct(e['memory_gib'])})",
                "fits": ("yes" if c.fits else "NO") + f" ({c.estimate.memory.gpu_total_bytes / GIB:.1f} GiB)",
            }
        )
    return rows


def summary_rows(s: Summary) -> list[dict[str, str]]:
    names = {
        "samples_per_s_per_gpu": "samples/s per GPU",
        "wall_hours": "wall time",
        "gpu_hours": "GPU-hours",
        "memory_gib": "memory per GPU",
    }
    rows = []
    for m, label in names.items():
        for half in ("all", "fit", "held-out"):
            st = s.by_metric[m][half]
            if st.n == 0:
                continue
            floor = s.worst_error_floor.get(half) if s.worst_error_floor else None
            rows.append(
                {
                    "figure": label,
                    "runs": half,
                    "n": str(st.n),
                    "median |error|": f"{st.median_abs:.1%}",
                    "worst |error|": f"{st.worst_abs:.1%}",
                    # Only samples/s has groups of same-input runs (the other figures are one run each).
                    "least worst reachable": f"{floor:.1%}"
                    if floor is not None and m == "samples_per_s_per_gpu"
                    else "-",
                    "median error": f"{st.median_signed:+.1%}",
                }
            )
    return rows


def spread_rows(s: Summary) -> list[dict[str, str]]:
    """The groups of runs with identical inputs and different published samples/s, widest first."""
    rows = []
    for g in s.spread_groups:
        rows.append(
            {
                "runs with identical inputs": ", ".join(g.runs),
                "published samples/s/GPU": " / ".join(f"{a:,.1f}" for a in g.published),
                "predicted": f"{g.predicted:,.1f}",
                "best single prediction": f"{g.best_prediction:,.1f}",
                "least worst |error|": f"{g.min_worst_abs_error:.1%}",
            }
        )
    return rows


def summary_json(s: Summary) -> dict[str, Any]:
    iv = s.intervals
    return {
        "errors": {
            m: {
                half: {
                    "n": st.n,
                    "median_abs_error": st.median_abs,
                    "worst_abs_error": st.worst_abs,
                    "median_error": st.median_signed,
                }
                for half, st in d.items()
            }
            for m, d in s.by_metric.items()
        },
        "trained_layouts_predicted_to_fit": {h: {"fit": f, "trained": t} for h, (f, t) in s.fits.items()},
        "trained_layouts_not_fitting": s.not_fitting,
        "time_interval": {
            "ratio_low": iv.ratio_low,
            "ratio_high": iv.ratio_high,
            "coverage": iv.coverage,
            "min_comparable_runs": MIN_COMPARABLE_RUNS,
            "fit_runs": iv.n_fit,
            "held_out_inside": iv.held_out_inside,
            "held_out_runs": iv.n_held_out,
            "classes": {k: vars(r) for k, r in iv.classes.items()},
        },
        "runtime_reserve_bound_gib": s.reserve_bound_gib,
        "runtime_reserve_bound_run": s.reserve_bound_run,
        "activation_memory_factor_fit": s.activation_factor,
        "activation_memory_factor_runs": s.activation_factor_runs,
        "same_inputs_groups": [
            {
                "runs": list(g.runs),
                "halves": list(g.halves),
                "published_samples_per_s_per_gpu": list(g.published),
                "predicted_samples_per_s_per_gpu": g.predicted,
                "best_single_prediction": g.best_prediction,
                "min_worst_abs_error": g.min_worst_abs_error,
            }
            for g in s.spread_groups
        ],
        "samples_per_s_worst_abs_error_floor": s.worst_error_floor,
        "serving_time_interval": None
        if s.serving_intervals is None
        else {
            "ratio_low": s.serving_intervals.ratio_low,
            "ratio_high": s.serving_intervals.ratio_high,
            "fit_measurements": s.serving_intervals.n_fit,
            "held_out_inside": s.serving_intervals.held_out_inside,
            "held_out_measurements": s.serving_intervals.n_held_out,
            "classes": {k: vars(r) for k, r in s.serving_intervals.classes.items()},
        },
        "gpu_ratios": {
            "rows": len(s.gpu_ratios),
            "inside": sum(c.inside for c in s.gpu_ratios),
            "log_uncertainty": ratio_uncertainty(s.gpu_ratios),
        },
    }


RATCHET_METRICS = ("samples_per_s_per_gpu", "wall_hours")


def ratchet_text(s: Summary) -> str:
    """The pins of tests/planner/test_validation.py: median |error| per metric and half, rounded up
    to 1e-4. The held-out half is pinned on its own (a model change may not buy a better fit half
    with a worse held-out half, which the median over all runs can hide)."""
    lines = ["PINNED_MEDIAN_ABS_ERROR = {"]
    for m in RATCHET_METRICS:
        pins = {h: s.by_metric[m][h].median_abs for h in HALVES}
        body = ", ".join(f'"{h}": {math.ceil(x * 1e4) / 1e4:.4f}' for h, x in pins.items() if x is not None)
        lines.append(f'    "{m}": {{{body}}},')
    return "\n".join([*lines, "}"])


# ------------------------------------------------------------------ profiles/validation_intervals.yaml
def cache_content(s: Summary) -> dict[str, Any]:
    """What the cache holds: the published-runs compute scale, the time range of every class of
    prediction (planner/intervals.py) with the runs behind it, the held-out coverage, the uncertainty
    of a cross-GPU ratio (planner/gpu_ratios.py) and the runs per hardware."""
    iv = s.intervals
    per_hw: dict[str, int] = {}
    for r in load_runs().runs:
        if r.published_samples_per_s is not None:
            per_hw[r.hardware] = per_hw.get(r.hardware, 0) + 1

    def entry(r: ClassRange) -> dict[str, Any]:
        return {
            "ratio_low": round(r.ratio_low, 6),
            "ratio_high": round(r.ratio_high, 6),
            "runs": r.runs,
            "comparable": r.comparable,
        }

    return {
        "compute_scale": s.compute_scale,
        # the newest source behind the fit, as the scale's `observed` date
        "compute_scale_observed": newest_fit_source().isoformat(),
        "interval_coverage": iv.coverage,
        "min_comparable_runs": MIN_COMPARABLE_RUNS,
        "fit_runs": iv.n_fit,
        "held_out_inside": iv.held_out_inside,
        "held_out_runs": iv.n_held_out,
        "all_runs": entry(iv.all_runs),
        "classes": {k: entry(r) for k, r in iv.classes.items()},
        "serving": serving_entry(s.serving_intervals, entry),
        "gpu_ratio_log_uncertainty": round(ratio_uncertainty(s.gpu_ratios), 6),
        "gpu_ratio_rows": len(s.gpu_ratios),
        "gpu_ratio_rows_inside": sum(c.inside for c in s.gpu_ratios),
        "throughput_runs_per_hardware": dict(sorted(per_hw.items())),
    }


def serving_entry(
    iv: Intervals | None, entry: Callable[[ClassRange], dict[str, Any]]
) -> dict[str, Any] | None:
    """The serving ranges as the cache holds them (None: no serving measurements were checked)."""
    if iv is None:
        return None
    return {
        "fit_measurements": iv.n_fit,
        "held_out_inside": iv.held_out_inside,
        "held_out_measurements": iv.n_held_out,
        "all_measurements": entry(iv.all_runs),
        "classes": {k: entry(r) for k, r in iv.classes.items()},
    }


def write_cache(s: Summary) -> Path:
    p = cache_path()
    head = (
        "# Fitted by planner/validation.py: the compute scale every uncalibrated GPU prediction uses, training\n"
        "# and serving (one multiplier on the modelled device rates, fitted once on the fit halves of\n"
        "# profiles/published_runs.yaml and profiles/published_serving.yaml together), the\n"
        "# time range of each class of prediction (binding, model size class, stack: planner/intervals.py),\n"
        "# each from the fit-half runs comparable to it, and the uncertainty of a ratio between two GPUs\n"
        "# (the largest |log| distance of the model's ratios from profiles/published_ratios.yaml); `serving`:\n"
        "# the same ranges for `evaplan serve`, from profiles/published_serving.yaml (planner/serving_validation.py).\n"
        f"# Generated; do not edit. Regenerate with `{REGENERATE}` (tests/planner/test_validation.py\n"
        "# fails when it drifts from the model).\n"
    )
    body = yaml.safe_dump(cache_content(s), sort_keys=False, allow_unicode=True)
    p.write_text(head + body, encoding="utf-8")
    read_cache.cache_clear()
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m planner.validation --write-intervals`: refresh profiles/validation_intervals.yaml;
    `--ratchet`: print the medians that tests/planner/test_validation.py pins (to lower the pin)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--write-intervals"]:
        s = summarize(check_all())
        path = write_cache(s)
        print(f"wrote {path}")
        return 0
    if args == ["--ratchet"]:
        print(ratchet_text(summarize(check_all())))
        return 0
    print("usage: python -m planner.validation --write-intervals | --ratchet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
