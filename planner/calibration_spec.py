"""The calibration profile (calibrations/<hardware>.yaml): fitted efficiency factors of one hardware
profile and the measured runs behind them. Only the data shape lives here, beside the other profile
kinds, so the profile loader (planner/profiles.py) reads it without importing the code that fits it
(planner/calibration.py), which sits above the estimate.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field, model_validator

from planner.spec import Name, Sourced, SourcedFraction, SourcedNonNegative, StrictModel


class CalibrationRun(StrictModel):
    """One measured run behind a calibration: its layout, and predicted vs measured figures."""

    job: str = Field(min_length=1)
    metrics: str = Field(min_length=1, description="the metrics.jsonl it was read from")
    model: Name
    observed: date
    world_size: int = Field(gt=0)
    micro_batch: int = Field(gt=0)
    grad_accum: int = Field(gt=0)
    zero_stage: int = Field(ge=0, le=3)
    grad_ckpt: bool
    offload_optimizer: Literal["none", "cpu", "nvme"] = "none"
    offload_param: Literal["none", "cpu", "nvme"] = "none"
    image_size: int = Field(gt=0)
    patch_dropout: float = Field(ge=0, lt=1)
    steps_timed: int = Field(gt=0, description="step records after the warm-up steps")
    measured_step_s: float = Field(gt=0, description="median step_time_s of the timed steps")
    measured_step_spread: float = Field(ge=0, description="(p90 − p10) / median of the timed steps")
    measured_mfu: float | None = Field(default=None, ge=0, description="the trainer's own MFU (median)")
    uncalibrated_step_s: float = Field(gt=0, description="the planner's step with the profile as it was")
    calibrated_step_s: float = Field(gt=0, description="the planner's step with this calibration")
    measured_peak_mem_gib: float = Field(gt=0)
    peak_mem_kind: Literal["device", "host_rss"]
    uncalibrated_mem_gib: float = Field(
        gt=0, description="the planner's per-GPU total with the profile as it was"
    )
    comm_logged_bytes_measured: float | None = Field(default=None, ge=0)
    comm_logged_bytes_predicted: float | None = Field(default=None, ge=0)


class CalibrationSpec(StrictModel):
    """calibrations/<hardware>.yaml: fitted efficiency factors of one hardware profile, and their runs."""

    name: Name = Field(description="the hardware profile's name (one calibration per hardware)")
    hardware: Name
    fitted_at: datetime
    bf16_dense_tflops: float = Field(gt=0, description="the profile's peak the scale was fitted against")
    compute_scale: Sourced | None = Field(
        default=None, description="fitted multiplier on the modelled device rates (planner/ops.py)"
    )
    mfu_default: SourcedFraction | None = Field(
        default=None, description="older calibrations: a fitted flat MFU, applied as the override"
    )
    memory_reserved_gib: Sourced
    microbatch_overhead_s: SourcedNonNegative | None = Field(default=None, description="fitted, else derived")
    step_overhead_s: SourcedNonNegative | None = Field(default=None, description="fitted, else derived")
    runs: list[CalibrationRun] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_efficiency(self) -> CalibrationSpec:
        if (self.compute_scale is None) == (self.mfu_default is None):
            raise ValueError(
                "a calibration holds compute_scale (or, from an older evaplan, mfu_default): exactly one"
            )
        return self

    @property
    def display_name(self) -> str:
        return f"calibration of {self.hardware} ({len(self.runs)} run(s))"

    def efficiency_text(self) -> str:
        if self.compute_scale is not None:
            return f"compute ×{self.compute_scale.value:.4g} of the modelled rates"
        assert self.mfu_default is not None
        return f"MFU {self.mfu_default.value:.4g} (flat override, older calibration)"

    def describe(self) -> str:
        jobs = ", ".join(r.job for r in self.runs)
        over = ""
        if self.microbatch_overhead_s is not None:
            over += f", {self.microbatch_overhead_s.value * 1e3:.3g} ms per micro-batch"
        if self.step_overhead_s is not None:
            over += f", {self.step_overhead_s.value * 1e3:.3g} ms per step"
        return (
            f"calibration of {self.hardware} from {len(self.runs)} run(s) ({jobs}), fitted "
            f"{self.fitted_at:%Y-%m-%d %H:%M} UTC: {self.efficiency_text()}{over}, "
            f"memory reserved {self.memory_reserved_gib.value:.3g} GiB"
        )
