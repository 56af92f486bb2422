"""Honest ranges for time and money: how far the planner has been off on runs it has been checked on.

Uncalibrated, the range is the fit half's 10th–90th percentile of published time / predicted time over
the bundled published runs (planner/validation.py); it is read from a small committed cache,
profiles/validation_intervals.yaml, so `evaplan estimate` starts as fast as before (a test recomputes it
and fails on drift; `python -m planner.validation --write-intervals` refreshes it).

Calibrated (`evaplan calibrate` on the user's own runs), the range is what the calibration's runs
say: measured / calibrated step time, widened by the runs' own step-time spread. Both ranges are
multiplicative on time; GPU-hours and dollars scale with time (the price per node-hour is fixed).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from planner.prediction_range import PredictionRange

if TYPE_CHECKING:
    from planner.calibration_spec import CalibrationSpec

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


@dataclass(frozen=True)
class TimeRange:
    """Multiplicative range on predicted time (and so on GPU-hours and dollars)."""

    low: float
    high: float
    calibrated: bool
    basis: str

    def of(self, x: float) -> tuple[float, float]:
        return x * self.low, x * self.high


def time_range(hardware: str, calibration: CalibrationSpec | None = None) -> TimeRange:
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
    q = c["quantiles"]
    n_hw = c["throughput_runs_per_hardware"].get(hardware, 0)
    where = f"{n_hw} on {hardware}" if n_hw else f"none on {hardware}: borrowed"
    return TimeRange(
        c["ratio_low"],
        c["ratio_high"],
        False,
        f"uncalibrated: time × {c['ratio_low']:.2f}–{c['ratio_high']:.2f}, published/predicted "
        f"{q[0]:.0%}–{q[1]:.0%} over {c['fit_runs']} runs ({where}); evaplan validate",
    )


def prediction_range(
    r: TimeRange, wall_s: float, gpu_hours: float | None, cost_usd: float | None
) -> PredictionRange:
    f = range_fields(r, wall_s, gpu_hours, cost_usd)
    f.pop("calibrated")
    return PredictionRange(
        time_ratio_low=r.low, time_ratio_high=r.high, calibrated=r.calibrated, basis=r.basis, **f
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


def certainly_less(a: float, b: float, ra: TimeRange, rb: TimeRange, same_hardware: bool) -> bool:
    """Is a < b beyond doubt? On the same hardware the planner's error moves both alike (the
    comparison is then as certain as the prices); otherwise only if a's high end is below b's low end."""
    if same_hardware and ra == rb:
        return a < b
    return a * ra.high < b * rb.low
