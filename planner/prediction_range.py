"""The low/high figures an estimate carries: a data shape only. The estimate receives it filled in by
its caller (planner/intervals.py computes it from the validation cache or the user's calibration), so
planner/estimate.py imports nothing that fits a range.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PredictionRange(BaseModel):
    """Low/high of an estimate's time, GPU-hours and dollars (the first price), and what they rest on."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    time_ratio_low: float
    time_ratio_high: float
    calibrated: bool
    basis: str
    comparable_runs: int | None = None  # published runs behind an uncalibrated range
    wall_days_low: float
    wall_days_high: float
    gpu_hours_low: float | None = None
    gpu_hours_high: float | None = None
    cost_usd_low: float | None = None
    cost_usd_high: float | None = None
