"""Honest ranges for time and money: how far the planner has been off on runs like the question.

Uncalibrated, the range is a distribution-free prediction interval of published time / predicted time
over the fit half of the bundled published runs *comparable to the question* (planner/validation.py):
the runs of the same class, a class being what binds the prediction (`compute`: the device-side step;
`loader`: the data loader's floor), the model's size class (total parameters on a fixed 1-3-10 grid:
< 0.3 B, 0.3–1 B, 1–3 B, 3–10 B, ≥ 10 B) and the software stack. When fewer than MIN_COMPARABLE_RUNS
fit-half runs share the class, the class widens, in this order: any stack; then the size class ± 1, ± 2, …
(still the same binding); then every fit-half run. The range of n comparable runs is their j-th smallest
to j-th largest ratio with j the largest that keeps (n + 1 − 2j)/(n + 1) ≥ 80 %: for exchangeable runs
that is the chance a new one falls inside (order statistics), so 9 runs (j = 1: 8/10) is the fewest
that can back an 80 % range. The table of every class's range is read from a small committed cache,
profiles/validation_intervals.yaml, so `evaplan estimate` starts as fast as before and never imports the
fitting code (a test recomputes the cache and fails on drift; `python -m planner.validation
--write-intervals` refreshes it).

Calibrated (`evaplan calibrate` on the user's own runs), the range is what the calibration's runs
say: measured / calibrated step time, widened by the runs' own step-time spread. Both ranges are
multiplicative on time; GPU-hours and dollars scale with time (the price per node-hour is fixed).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import yaml

from planner.prediction_range import PredictionRange
from planner.spec import Stack

if TYPE_CHECKING:
    from planner.calibration_spec import CalibrationSpec
    from planner.estimate import Estimate
    from planner.spec import HardwareSpec, ParallelPlan, TrainingSpec

# The classes a range is fitted per (planner/validation.py writes one range for every combination).
BINDINGS = ("compute", "loader")
STACKS: tuple[str, ...] = get_args(Stack)  # the software stacks (planner/spec.py), one range class each
# Model size classes: total parameters on a 1-3-10 grid (half-decades), fixed before looking at any run.
SIZE_EDGES_PARAMS = (0.3e9, 1e9, 3e9, 10e9)
SIZE_LABELS = ("<0.3B", "0.3-1B", "1-3B", "3-10B", ">=10B")
# The share of later runs a range should hold, and the fewest comparable runs that can back it:
# the smallest n with (n − 1)/(n + 1) ≥ INTERVAL_COVERAGE (the min–max of n exchangeable runs).
INTERVAL_COVERAGE = 0.8
MIN_COMPARABLE_RUNS = 9

CACHE_NAME = "validation_intervals.yaml"
REGENERATE = "python -m planner.validation --write-intervals"


def cache_path() -> Path:
    from planner.profiles import bundled_dir

    return bundled_dir() / CACHE_NAME


@cache
def read_cache() -> dict[str, Any]:
    # A bundled file this project writes: libyaml's safe loader when PyYAML has it (faster start-up,
    # same values), else the pure-Python one.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(cache_path().read_text(encoding="utf-8"), Loader=loader)


def published_compute_scale() -> float | None:
    """The compute scale fitted on the published runs (None when the cache has none)."""
    value = read_cache().get("compute_scale")
    return None if value is None else float(value)


def size_class(total_params: float) -> int:
    """Index into SIZE_LABELS of a model's total parameter count."""
    return bisect.bisect_right(SIZE_EDGES_PARAMS, total_params)


@dataclass(frozen=True)
class RangeClass:
    """What makes runs comparable for a range: binding, model size class, software stack."""

    binding: str  # one of BINDINGS
    size: int  # index into SIZE_LABELS
    stack: str  # one of STACKS

    @property
    def key(self) -> str:
        return f"{self.binding}/{SIZE_LABELS[self.size]}/{self.stack}"

    def describe(self) -> str:
        return f"{self.binding}-bound, {SIZE_LABELS[self.size]} parameters, {self.stack} stack"


def binding(
    hardware: HardwareSpec, micro_batch: int, grad_accum: int, loader_workers: int | None, step_s: float
) -> str:
    """ "loader" when the data loader's floor sets the step (planner/evaluate.py step_term), else "compute"."""
    from planner import data_pipeline
    from planner.evaluate import data_loading_term

    cores = data_pipeline.loader_cores_per_gpu(hardware, loader_workers)
    loading_s = data_loading_term(
        micro_batch, grad_accum, cores, data_pipeline.pipeline_per_core_s(hardware)
    ).value
    return binding_from(loading_s, step_s)


def binding_from(data_loading_s: float, step_s: float) -> str:
    """The step is max(device-side time, data loading): "loader" when loading sets it."""
    return "loader" if data_loading_s >= step_s else "compute"


def range_class(
    total_params: float, hardware: HardwareSpec, plan: ParallelPlan, training: TrainingSpec, step_s: float
) -> RangeClass:
    """The class of a prediction: what binds it, the model's size class, the stack."""
    bound = binding(hardware, plan.micro_batch, plan.grad_accum, training.loader_workers, step_s)
    return RangeClass(bound, size_class(total_params), training.stack)


def estimate_class(e: Estimate) -> RangeClass:
    """The class of an estimate's prediction (its own step and data-loading times)."""
    return RangeClass(
        binding_from(e.compute.data_loading_s, e.compute.step_s), size_class(e.params.total), e.training.stack
    )


@dataclass(frozen=True)
class TimeRange:
    """Multiplicative range on predicted time (and so on GPU-hours and dollars)."""

    low: float
    high: float
    calibrated: bool
    basis: str
    runs: int | None = None  # the comparable published runs behind an uncalibrated range

    def of(self, x: float) -> tuple[float, float]:
        return x * self.low, x * self.high


def time_range(
    hardware: str, calibration: CalibrationSpec | None = None, cls: RangeClass | None = None
) -> TimeRange:
    """The calibration's range when given; else the published runs' range for the prediction's class
    (`cls`; None: every fit-half run)."""
    if calibration is not None:
        ratios = [r.measured_step_s / r.calibrated_step_s for r in calibration.runs]
        spread = max(r.measured_step_spread for r in calibration.runs)
        lo, hi = min(ratios) * (1 - spread / 2), max(ratios) * (1 + spread / 2)
        return TimeRange(
            lo,
            hi,
            True,
            f"calibrated on {len(ratios)} run(s) of your own: measured/calibrated step "
            f"{min(ratios):.2f}–{max(ratios):.2f}, spread {spread:.0%}",
        )
    c = read_cache()
    entry = c["classes"][cls.key] if cls is not None else c["all_runs"]
    n_hw = c["throughput_runs_per_hardware"].get(hardware, 0)
    where = f"{n_hw} of all the runs on {hardware}" if n_hw else f"none of all the runs on {hardware}"
    asked = f"this prediction: {cls.describe()}; the runs: " if cls is not None else ""
    return TimeRange(
        entry["ratio_low"],
        entry["ratio_high"],
        False,
        f"uncalibrated: time × {entry['ratio_low']:.2f}–{entry['ratio_high']:.2f}, range from "
        f"{entry['runs']} comparable published runs ({asked}{entry['comparable']}; {where}); "
        "evaplan validate",
        entry["runs"],
    )


def serving_range(total_params: float, stack: str) -> TimeRange:
    """A serving prediction's range: published / predicted batch time over the published inference
    measurements comparable to it (compute-bound, the model's size class, the stack; widened as
    training's), from the cache's `serving` table (planner/serving_validation.py)."""
    cls = RangeClass("compute", size_class(total_params), stack)
    s = read_cache()["serving"]
    e = s["classes"][cls.key]
    return TimeRange(
        e["ratio_low"],
        e["ratio_high"],
        False,
        f"range from {e['runs']} comparable published inference measurements ({cls.describe()}; the "
        f"measurements: {e['comparable']}; {s['held_out_inside']} of {s['held_out_measurements']} held-out "
        "measurements inside their class's range; evaplan validate)",
        e["runs"],
    )


def prediction_range(
    r: TimeRange, wall_s: float, gpu_hours: float | None, cost_usd: float | None
) -> PredictionRange:
    return PredictionRange(
        time_ratio_low=r.low,
        time_ratio_high=r.high,
        basis=r.basis,
        comparable_runs=r.runs,
        **range_fields(r, wall_s, gpu_hours, cost_usd),  # with `calibrated`
    )


def range_fields(
    r: TimeRange, wall_s: float, gpu_hours: float | None, cost_usd: float | None
) -> dict[str, float | bool | None]:
    """low/high columns for JSON and CSV, in the units of the columns they bracket."""
    d = wall_s / 86400.0
    return {
        "wall_days_low": d * r.low,
        "wall_days_high": d * r.high,
        "gpu_hours_low": None if gpu_hours is None else gpu_hours * r.low,
        "gpu_hours_high": None if gpu_hours is None else gpu_hours * r.high,
        "cost_usd_low": None if cost_usd is None else cost_usd * r.low,
        "cost_usd_high": None if cost_usd is None else cost_usd * r.high,
        "calibrated": r.calibrated,
    }


def fmt_days_range(r: TimeRange, wall_s: float) -> str:
    """ "12.9 d (10.1–16.0)", in hours below two days."""
    if wall_s < 2 * 86400:
        h = wall_s / 3600
        return f"{h:,.1f} h ({h * r.low:,.1f}–{h * r.high:,.1f})"
    d = wall_s / 86400
    return f"{d:,.1f} d ({d * r.low:,.1f}–{d * r.high:,.1f})"


def fmt_usd_range(r: TimeRange, usd: float) -> str:
    return f"${usd:,.0f} (${usd * r.low:,.0f}–${usd * r.high:,.0f})"


def gpu_ratio_uncertainty() -> float:
    """The |log| uncertainty of a ratio between two GPUs' predictions: how far the model's GPU-to-GPU
    ratios sit from the published same-software ones (planner/gpu_ratios.py, via the cache)."""
    return float(read_cache()["gpu_ratio_log_uncertainty"])


@dataclass(frozen=True)
class RatioRange:
    """a / b of two options' figures (cost or time) with the range the evidence allows."""

    ratio: float
    low: float
    high: float
    same_gpu: bool

    @property
    def certain(self) -> bool:
        """The range excludes parity (on one GPU, the figures differ at all)."""
        return self.high < 1.0 or self.low > 1.0 if not self.same_gpu else self.ratio != 1.0

    def describe(self, what: str) -> str:
        if self.same_gpu:
            return "certain: the same GPU, so the model's error cancels and only the price differs"
        word = "certain" if self.certain else "not certain"
        return f"{word}: {what} ratio {self.low:.2f}–{self.high:.2f}"


def ratio_range(a: float, b: float, same_gpu: bool) -> RatioRange:
    """a / b, certain on one GPU (one model error moves both alike); across two GPUs widened by
    exp(± gpu_ratio_uncertainty()): the two options' errors are one model's, so only its error on the
    ratio of the GPUs counts, not two independent intervals."""
    r = a / b
    if same_gpu:
        return RatioRange(r, r, r, True)
    u = math.exp(gpu_ratio_uncertainty())
    return RatioRange(r, r / u, r * u, False)
