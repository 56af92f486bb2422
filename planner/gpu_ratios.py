"""The planner's GPU-to-GPU ratios beside the published same-software ones (profiles/published_ratios.yaml).

For each published ratio the model's own ratio is the predicted samples/s of the row's `clip_layout` (a
CLIP training job: the source's own layout for a CLIP source, one fixed ViT-H/14 node for the MLPerf
rows; the file's header says why) on the numerator GPU over that on the denominator GPU, each predicted
as `evaplan validate` predicts a published run (planner/validation.py `check_ratios` runs `check_run` on
`layout_run`, with the same compute scale). It is inside when published low ≤ model ≤ published high.

The ratio evidence for `evaplan compare`: how far the model's cross-GPU ratio has to stretch to reach
every published figure of a row, `reach` = max(|log(model / published low)|, |log(model / published
high)|): the model's error on that pair plus the spread of the true ratio across workloads on one
software stack. Its largest value over the rows is the uncertainty of any cross-GPU ratio the model
predicts: a comparison of two GPUs is certain only when the predicted ratio times exp(± that) excludes
parity. It is stored with the intervals (profiles/validation_intervals.yaml), so `compare` reads it
as data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from planner.published import PublishedFigures, PublishedRun
from planner.published_ratios import PublishedRatio


@dataclass(frozen=True)
class RatioCheck:
    """One published GPU ratio beside the model's ratio at the row's CLIP layout."""

    row: PublishedRatio
    numerator_sps: float  # predicted samples/s of the layout on the numerator GPU
    denominator_sps: float

    @property
    def model_ratio(self) -> float:
        return self.numerator_sps / self.denominator_sps

    @property
    def inside(self) -> bool:
        return self.row.ratio_low <= self.model_ratio <= self.row.ratio_high

    @property
    def log_error(self) -> float:
        """log(model / published): 0 inside the published range, else to its nearer end."""
        m = self.model_ratio
        if m > self.row.ratio_high:
            return math.log(m / self.row.ratio_high)
        if m < self.row.ratio_low:
            return math.log(m / self.row.ratio_low)
        return 0.0

    @property
    def reach(self) -> float:
        """The |log| factor from the model's ratio to the farther end of the published range."""
        m = self.model_ratio
        return max(abs(math.log(m / self.row.ratio_low)), abs(math.log(m / self.row.ratio_high)))


def layout_run(row: PublishedRatio, hardware: str) -> PublishedRun:
    """The row's CLIP layout on one of its GPUs, as a published run that `check_run` predicts."""
    return PublishedRun(
        name=f"{row.name}-{hardware}",
        hardware=hardware,
        patch_dropout=0.0,
        published=PublishedFigures(),
        source_url=row.source_url,
        quote=row.quote,
        source_date=row.source_date,
        **row.clip_layout.model_dump(),  # model, GPUs, micro-batch, ZeRO, checkpointing, precision, stack, kernel
    )


def ratio_uncertainty(checks: Sequence[RatioCheck]) -> float:
    """The largest `reach` over the rows: the factor exp(± this) any cross-GPU ratio the model predicts
    carries."""
    return max((c.reach for c in checks), default=0.0)


def ratio_rows(checks: Sequence[RatioCheck]) -> list[dict[str, Any]]:
    """One row per published ratio: raw numbers (JSON/CSV)."""
    return [
        {
            "ratio": c.row.name,
            "numerator": c.row.numerator,
            "denominator": c.row.denominator,
            "clip_layout": c.row.clip_layout.model,
            "clip_layout_gpus": c.row.clip_layout.gpus,
            "published_ratio": c.row.ratio,
            "published_ratio_low": c.row.ratio_low,
            "published_ratio_high": c.row.ratio_high,
            "published_figures": len(c.row.figures),
            "model_ratio": c.model_ratio,
            "inside": c.inside,
            "log_error": c.log_error,
            "reach": c.reach,
            "source_url": c.row.source_url,
            "source_date": c.row.source_date.isoformat(),
        }
        for c in checks
    ]


def ratio_table_rows(checks: Sequence[RatioCheck]) -> list[dict[str, str]]:
    """The readable table: GPUs, published range (figures), the model's ratio, inside or by how much not."""
    rows = []
    for c in checks:
        r = c.row
        rows.append(
            {
                "published ratio": r.name,
                "GPUs": f"{r.numerator} / {r.denominator}",
                "published": f"{r.ratio:.2f} ({r.ratio_low:.2f}–{r.ratio_high:.2f}, {len(r.figures)} figures)",
                "CLIP layout": f"{r.clip_layout.model} on {r.clip_layout.gpus}",
                "model": f"{c.model_ratio:.2f}×",
                "inside": "yes" if c.inside else f"NO ({math.exp(c.log_error) - 1:+.0%} off the range)",
            }
        )
    return rows


def ratio_line(checks: Sequence[RatioCheck]) -> str:
    inside = sum(c.inside for c in checks)
    u = ratio_uncertainty(checks)
    return (
        f"GPU ratios inside their published ranges: {inside} of {len(checks)}; a ratio of two GPUs is "
        f"certain to ×{math.exp(u):.2f} either way (the farthest published figure from the model's ratio; "
        "evaplan compare)"
    )
