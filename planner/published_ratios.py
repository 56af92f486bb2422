"""Published same-software GPU-to-GPU ratios, bundled with their sources (profiles/published_ratios.yaml).

Each entry is one pair of GPUs as one source measured them on one software stack: the hardware
profiles (`numerator` / `denominator`), the workload, the published figures (each a pair from one
submitter and one software release), the ratio speed(numerator) / speed(denominator) that each figure
gives, the range they span, the source with a quote and its date, and `clip_layout`: the CLIP job at
which evaplan's own ratio for the two GPUs is computed (planner/gpu_ratios.py). The loader recomputes
every ratio from the figures, so a file whose stated ratio or range disagrees with its own figures is
refused with one line.
"""

from __future__ import annotations

import statistics
from datetime import date
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from planner.errors import ProfileError
from planner.published import Attention, NamedEntries, Stack
from planner.spec import Name, Precision, StrictModel

# samples_per_s and global_batches_per_s: more is faster (ratio = numerator / denominator);
# minutes_to_train: less is faster (ratio = denominator / numerator).
Unit = Literal["samples_per_s", "global_batches_per_s", "minutes_to_train"]
FASTER_IS_MORE: dict[str, bool] = {
    "samples_per_s": True,
    "global_batches_per_s": True,
    "minutes_to_train": False,
}

# Stated ratios and ranges are written to 3 decimals: a stated figure may differ from the recomputed
# one by half a unit in the last place.
ROUNDING = 0.0005 + 1e-9


class RatioFigure(StrictModel):
    """One published pair: the numerator GPU's figure and the denominator GPU's, in the row's unit
    (or this figure's own `unit`)."""

    label: str = Field(min_length=1)
    numerator: float = Field(gt=0)
    denominator: float = Field(gt=0)
    unit: Unit | None = Field(default=None, description="this figure's unit, when not the row's")

    def ratio(self, row_unit: Unit) -> float:
        """speed(numerator GPU) / speed(denominator GPU)."""
        unit = self.unit or row_unit
        if FASTER_IS_MORE[unit]:
            return self.numerator / self.denominator
        return self.denominator / self.numerator


class ClipLayout(StrictModel):
    """The CLIP training job at which the model's ratio for the two GPUs is computed."""

    model: Name = Field(description="model profile")
    gpus: int = Field(gt=0)
    micro_batch: int = Field(gt=0)
    zero_stage: int = Field(ge=0, le=3)
    grad_ckpt: bool
    precision: Precision
    stack: Stack
    attention: Attention


class PublishedRatio(StrictModel):
    """One published GPU-to-GPU ratio: the two GPUs, the workload, the figures and the source."""

    name: Name
    numerator: Name = Field(description="hardware profile whose speed is divided")
    denominator: Name = Field(description="hardware profile it is divided by")
    workload: str = Field(min_length=10)
    unit: Unit
    figures: list[RatioFigure] = Field(min_length=1)
    stated_spread: float | None = Field(
        default=None, gt=0, lt=1, description="± fraction the source states; required with one figure"
    )
    ratio: float = Field(gt=0, description="the median of the figures' ratios, as written in `arithmetic`")
    ratio_low: float = Field(gt=0)
    ratio_high: float = Field(gt=0)
    arithmetic: str = Field(min_length=10, description="the derivation written out")
    source_url: str = Field(pattern=r"^https://")
    quote: str = Field(min_length=10, description="the source's words, verbatim")
    source_date: date
    notes: list[str] = Field(default_factory=list)
    clip_layout: ClipLayout

    def figure_ratios(self) -> list[float]:
        return [f.ratio(self.unit) for f in self.figures]

    def computed_range(self) -> tuple[float, float, float]:
        """(low, median, high) from the figures: their smallest and largest ratio, or with one figure
        that ratio × (1 ∓ stated_spread)."""
        rs = self.figure_ratios()
        mid = statistics.median(rs)
        if len(rs) == 1:
            assert self.stated_spread is not None  # the validator requires it
            return mid * (1 - self.stated_spread), mid, mid * (1 + self.stated_spread)
        return min(rs), mid, max(rs)

    @model_validator(mode="after")
    def _consistent(self) -> PublishedRatio:
        if self.numerator == self.denominator:
            raise ValueError(f"ratio {self.name}: numerator and denominator are both {self.numerator}")
        if len(self.figures) == 1 and self.stated_spread is None:
            raise ValueError(f"ratio {self.name}: one figure needs the source's stated_spread for a range")
        if len(self.figures) > 1 and self.stated_spread is not None:
            raise ValueError(
                f"ratio {self.name}: stated_spread is for one figure; the figures give the range"
            )
        low, mid, high = self.computed_range()
        for what, stated, computed in (
            ("ratio", self.ratio, mid),
            ("ratio_low", self.ratio_low, low),
            ("ratio_high", self.ratio_high, high),
        ):
            if abs(stated - computed) > ROUNDING:
                raise ValueError(
                    f"ratio {self.name}: {what} {stated} is not what its figures give ({computed:.3f})"
                )
        return self


class PublishedRatios(NamedEntries, bundled_name="published_ratios.yaml", entry_kind="ratio"):
    ratios: list[PublishedRatio] = Field(min_length=1)


data_path = PublishedRatios.bundled_path


@cache
def load_ratios(path: str | None = None) -> PublishedRatios:
    """The bundled ratios (or those of `path`); a broken file is one clear line (ProfileError), and
    a GPU or model that names no profile too."""
    from planner import profiles as prof

    p = Path(path) if path else data_path()
    data = PublishedRatios.read(path)
    hardware, models = set(prof.index("hardware")), set(prof.index("models"))
    for r in data.ratios:
        for gpu in (r.numerator, r.denominator):
            if gpu not in hardware:
                raise ProfileError(
                    f"{p}: ratio {r.name}: no hardware profile {gpu}",
                    hint=f"use one of: {', '.join(sorted(hardware))}",
                )
        if r.clip_layout.model not in models:
            raise ProfileError(
                f"{p}: ratio {r.name}: no model profile {r.clip_layout.model}",
                hint="name a model of `evaplan profiles list`",
            )
    return data
