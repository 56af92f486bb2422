"""Published vs predicted for serving: `evaplan serve`'s prediction for every bundled inference
measurement (planner/published_serving.py, profiles/published_serving.yaml).

For each measurement the public serve API (planner.serve.serve_point) is called with the measurement's
model profile (at the resolution it ran at), hardware profile, batch, precision, software stack and
attention kernel, and its image batch time is set beside the published figure: the latency of one batch
where the source publishes a latency, images/s where it publishes images/s. Error = predicted /
published images/s − 1 for every row (positive: evaplan too optimistic about speed), so a latency row's
error is published ms / predicted ms − 1.

`serving_checks(compute_scale)` takes the compute scale as a parameter: None predicts with the hardware
profiles as shipped (what `evaplan serve` prints for them); a number scales every modelled device
rate by it, the quantity `evaplan calibrate` fits and planner/validation.py fits on training runs. A
fit that uses these rows reads the fit half only: the rows are split with the training runs' rule
(planner.validation.split_halves, per kind — here the software stack — sorted by the SHA-256 of the
name, the first ⌊n/2⌋ of each kind fitted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from planner import profiles as prof
from planner.errors import ProfileError
from planner.halves import (
    HALVES,
    SCALE_BOUNDS,
    ErrorStats,
    Intervals,
    fit_class_ranges,
    quantile,
    split_halves,
    stats,
)
from planner.intervals import RangeClass, size_class
from planner.params import count_params
from planner.published_serving import PublishedMeasurement, load_measurements
from planner.serve import serve_point
from planner.spec import HardwareSpec, ModelSpec, Sourced

# evaplan serve names a precision by its tensor-core rate: fp16 runs at the bf16 rate on every profiled
# GPU (the datasheets give the same dense FP16 and BF16 tensor-core figure: A100 312, H100 SXM 989 TFLOPS).
SERVE_PRECISION = {"fp16": "bf16", "bf16": "bf16", "fp8": "fp8", "int8": "int8"}


def serving_kind(m: PublishedMeasurement) -> str:
    """The kind the split is stratified by: the software stack, so both halves hold eager and fused rows."""
    return m.stack


@dataclass(frozen=True)
class ServingCheck:
    """One published measurement beside `evaplan serve`'s prediction for it."""

    measurement: PublishedMeasurement
    half: str  # "fit" | "held-out"
    predicted_latency_s: float  # one image batch on one GPU
    compute_scale: float | None  # None: the hardware profile as shipped

    @property
    def figure(self) -> str:
        """The published figure's kind: "latency_ms" or "images_per_s"."""
        return "latency_ms" if self.measurement.published.latency_ms is not None else "images_per_s"

    @property
    def predicted_images_per_s(self) -> float:
        return self.measurement.batch / self.predicted_latency_s

    @property
    def published_value(self) -> float:
        p = self.measurement.published
        return p.latency_ms if p.latency_ms is not None else p.images_per_s  # type: ignore[return-value]

    @property
    def predicted_value(self) -> float:
        """The prediction in the published figure's unit."""
        if self.figure == "latency_ms":
            return self.predicted_latency_s * 1e3
        return self.predicted_images_per_s

    @property
    def error(self) -> float:
        """predicted / published images/s − 1 (positive: too optimistic about speed)."""
        return self.predicted_images_per_s / self.measurement.published_images_per_s - 1.0


def measured_model(m: PublishedMeasurement) -> ModelSpec:
    """The measurement's model profile at the resolution the measurement ran at (re-validated)."""
    model = prof.load_model(m.model)
    if m.image_size is None or m.image_size == model.vision.image_size:
        return model
    data = model.model_dump()
    data["vision"]["image_size"] = m.image_size
    try:
        return ModelSpec.model_validate(data)
    except ValueError as e:
        raise ProfileError(
            f"published measurement {m.name}: image_size {m.image_size} does not suit model {m.model} "
            f"(patch {model.vision.patch_size})",
            hint="give a resolution that is a multiple of the model's patch size",
        ) from e


def scaled_hardware(name: str, compute_scale: float | None) -> HardwareSpec:
    """The hardware profile as shipped, or with every modelled device rate scaled by `compute_scale`."""
    hw = prof.load_hardware(name)
    if compute_scale is None:
        return hw
    if not (math.isfinite(compute_scale) and compute_scale > 0):
        raise ValueError(f"compute scale must be a positive number, got {compute_scale}")
    figure = Sourced(
        value=compute_scale,
        source="the compute scale given to planner.serving_validation.serving_checks",
        observed=max(m.source_date for m in load_measurements().measurements),
    )
    return hw.model_copy(update={"compute_scale": figure})


def check_measurement(m: PublishedMeasurement, half: str, compute_scale: float | None = None) -> ServingCheck:
    """`evaplan serve`'s prediction for one measurement: one GPU (TP 1), the measurement's batch."""
    hw = scaled_hardware(m.hardware, compute_scale)
    point = serve_point(
        measured_model(m),
        hw,
        None,
        precision=SERVE_PRECISION[m.precision],
        batch=m.batch,
        stack=m.stack,
        attention=m.attention,
    )
    if point.tp != 1:
        raise ProfileError(
            f"published measurement {m.name}: evaplan serve needs TP {point.tp} for batch {m.batch} of "
            f"{m.model} on {m.hardware}, the measurement used one GPU",
            hint="leave the measurement out, or record it on hardware where one GPU holds it",
        )
    return ServingCheck(m, half, point.image.total_s, compute_scale)


def serving_halves(path: str | None = None) -> dict[str, str]:
    """name → "fit" | "held-out" for the bundled measurements (or those of `path`)."""
    return split_halves(load_measurements(path).measurements, serving_kind)


def serving_checks(compute_scale: float | None = None, path: str | None = None) -> list[ServingCheck]:
    """Every published measurement beside `evaplan serve`'s prediction at `compute_scale` (None: the
    hardware profiles as shipped), with its half. The API a joint fit of the compute scale calls: it
    may read only the checks whose `half` is "fit"."""
    rows = load_measurements(path).measurements
    halves = serving_halves(path)
    return [check_measurement(m, halves[m.name], compute_scale) for m in rows]


# ------------------------------------------------------------------------------------------ fitting
def fit_half_log_errors(checks: Sequence[ServingCheck]) -> list[float]:
    """log(predicted / published images/s) of every fit-half row: all that a fit of the compute scale
    may read of the serving data (no held-out figure enters it)."""
    return [
        math.log(c.predicted_images_per_s / c.measurement.published_images_per_s)
        for c in checks
        if c.half == "fit"
    ]


def fit_half_measurements(path: str | None = None) -> list[PublishedMeasurement]:
    """The fit half of the measurements: all a joint fit of the compute scale may read."""
    halves = serving_halves(path)
    return [m for m in load_measurements(path).measurements if halves[m.name] == "fit"]


def serving_only_scale(path: str | None = None) -> float:
    """The compute scale that minimises the serving fit half's median |log(predicted / published)|, by
    the golden-section search training's fit uses (planner.validation.fit_compute_scale): a diagnostic
    of what the serving data alone asks for; the product's scale is fitted on training and serving
    together. Re-predicts at each trial scale: batch time is not proportional to it (host time)."""
    from planner.golden import minimize_log

    halves = serving_halves(path)
    fit = [m for m in load_measurements(path).measurements if halves[m.name] == "fit"]

    def loss(log_scale: float) -> float:
        errs = fit_half_log_errors([check_measurement(m, "fit", math.exp(log_scale)) for m in fit])
        return quantile([abs(e) for e in errs], 0.5)

    # 24 steps narrow the log bracket to about 0.01 % of the scale, as training's fit.
    return round(minimize_log(loss, SCALE_BOUNDS, 24), 4)


# ------------------------------------------------------------------------------------------ ranges
def measurement_class(c: ServingCheck) -> RangeClass:
    """A measurement's class as `evaplan serve` classes its prediction (planner/intervals.py
    serving_range): compute-bound, the model's size class, the stack."""
    total = count_params(measured_model(c.measurement)).total
    return RangeClass("compute", size_class(total), c.measurement.stack)


def fit_serving_intervals(checks: Sequence[ServingCheck]) -> Intervals:
    """The range of every serving class from the comparable fit-half measurements (published / predicted
    batch time = 1 + error), widened as training's (planner/halves.py comparable_range), and the
    held-out measurements' coverage."""
    pairs = {
        h: [(measurement_class(c), 1.0 + c.error) for c in checks if c.half == h] for h in ("fit", "held-out")
    }
    return fit_class_ranges(pairs["fit"], pairs["held-out"], ("compute",), "every fit-half measurement")


# ------------------------------------------------------------------------------------------ summary
def serving_summary(checks: Sequence[ServingCheck]) -> dict[str, ErrorStats]:
    """half ("all", "fit", "held-out") → n, median |error|, worst |error|, median error."""
    return {h: stats([c.error for c in checks if h in ("all", c.half)]) for h in HALVES}


def _fmt(x: float, figure: str) -> str:
    return f"{x:,.2f} ms" if figure == "latency_ms" else f"{x:,.0f} images/s"


def table_rows(checks: Sequence[ServingCheck]) -> list[dict[str, str]]:
    """The readable per-measurement table: published → predicted in the published unit (speed error)."""
    return [
        {
            "measurement": c.measurement.name,
            "half": c.half,
            "model": c.measurement.model
            + (f" @{c.measurement.image_size}" if c.measurement.image_size else ""),
            "GPU": c.measurement.hardware,
            "batch": str(c.measurement.batch),
            "engine": f"{c.measurement.engine} ({c.measurement.stack}, {c.measurement.attention})",
            "published → predicted (speed error)": f"{_fmt(c.published_value, c.figure)} → "
            f"{_fmt(c.predicted_value, c.figure)} ({c.error:+.0%})",
        }
        for c in checks
    ]


# The measurement's own fields in a JSON/CSV row, in this order.
RUN_ROW_FIELDS = ("image_size", "hardware", "batch", "precision", "engine", "stack", "attention")


def run_rows(checks: Sequence[ServingCheck]) -> list[dict[str, Any]]:
    """One row per measurement with raw numbers and units in the column names (JSON/CSV)."""
    out = []
    for c in checks:
        m = c.measurement
        out.append(
            {"measurement": m.name, "half": c.half, "model": m.model}
            | {f: getattr(m, f) for f in RUN_ROW_FIELDS}
            | {
                "published_figure": c.figure,
                "published_value": c.published_value,
                "predicted_value": c.predicted_value,
                "published_images_per_s": m.published_images_per_s,
                "predicted_images_per_s": c.predicted_images_per_s,
                "images_per_s_error": c.error,
                "compute_scale": c.compute_scale,
                "source_url": m.source_url,
                "source_date": m.source_date.isoformat(),
            }
        )
    return out


def summary_json(summary: dict[str, ErrorStats]) -> dict[str, Any]:
    """half → n, median_abs_error, worst_abs_error, median_error."""
    keys = ("n", "median_abs_error", "worst_abs_error", "median_error")
    return {
        h: dict(zip(keys, (st.n, st.median_abs, st.worst_abs, st.median_signed), strict=True))
        for h, st in summary.items()
    }


def summary_rows(summary: dict[str, ErrorStats]) -> list[dict[str, str]]:
    """The readable summary: one row per half that has measurements."""
    return [
        {
            "measurements": half,
            "n": str(st.n),
            "median |error|": f"{st.median_abs:.1%}",
            "worst |error|": f"{st.worst_abs:.1%}",
            "median error": f"{st.median_signed:+.1%}",
        }
        for half in HALVES
        if (st := summary[half]).n
    ]
