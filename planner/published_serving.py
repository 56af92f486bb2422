"""Published inference measurements that nobody here wrote, bundled with their sources
(profiles/published_serving.yaml): the serving counterpart of planner/published.py.

Each entry is one measurement of an image encoder as its authors publish it: the model profile whose
image tower has the measured encoder's shape (`model`, at `image_size`), the encoder's own shape as the
source states it (`measured`), the GPU's hardware profile, the batch, the precision, the engine as
published and the evaplan software stack and attention kernel it is read as, the figure (latency of one
batch in ms, or images/s, as published) and the source with a verbatim quote and its date. Settings a
source leaves unstated are listed in `assumptions`. `evaplan validate` (planner/serving_validation.py)
compares `evaplan serve`'s prediction with these figures.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from planner.errors import ProfileError
from planner.published import Attention, Stack
from planner.spec import Name, StrictModel

# fp16 and bf16 run at the same tensor-core rate on every profiled GPU; fp8/int8 as `evaplan serve` has them.
ServingPrecision = Literal["fp16", "bf16", "fp8", "int8"]


class MeasuredEncoder(StrictModel):
    """The measured encoder as the source states it (a test checks the model profile has its shape)."""

    model: str = Field(min_length=3, description="the source's name for it")
    width: int = Field(gt=0)
    depth: int = Field(gt=0)
    heads: int = Field(gt=0)
    tokens: int = Field(gt=0, description="tokens per image: patches, plus one if it has a class token")


class ServingFigure(StrictModel):
    """What the source states: the latency of one batch, or images per second (exactly one)."""

    latency_ms: float | None = Field(default=None, gt=0, description="one batch, one GPU")
    images_per_s: float | None = Field(default=None, gt=0, description="one GPU")

    @model_validator(mode="after")
    def _one(self) -> ServingFigure:
        if (self.latency_ms is None) == (self.images_per_s is None):
            raise ValueError("give exactly one of latency_ms and images_per_s")
        return self


class PublishedMeasurement(StrictModel):
    """One published inference measurement: setting, figure and source."""

    name: Name
    model: Name = Field(description="model profile whose image tower has the measured shape")
    image_size: int | None = Field(default=None, gt=0, description="default: the model's own")
    measured: MeasuredEncoder
    hardware: Name = Field(description="hardware profile")
    batch: int = Field(gt=0, le=65536)
    precision: ServingPrecision
    engine: str = Field(min_length=3, description="the inference engine as published")
    stack: Stack = Field(description="the evaplan software stack the engine is read as")
    attention: Attention
    published: ServingFigure
    source_url: str = Field(pattern=r"^(https://|benchmarks/)")
    quote: str = Field(min_length=10, description="the source's words, verbatim")
    source_date: date = Field(description="the date of the source (commit, page, paper)")
    assumptions: list[str] = Field(default_factory=list, description="settings the source does not state")

    @property
    def published_images_per_s(self) -> float:
        """Stated, or batch over the stated latency."""
        p = self.published
        if p.images_per_s is not None:
            return p.images_per_s
        assert p.latency_ms is not None  # the validator guarantees one of the two
        return self.batch / (p.latency_ms / 1e3)


class PublishedMeasurements(StrictModel):
    measurements: list[PublishedMeasurement] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PublishedMeasurements:
        seen: set[str] = set()
        for m in self.measurements:
            if m.name in seen:
                raise ValueError(f"measurement name {m.name} appears twice")
            seen.add(m.name)
        return self


def data_path() -> Path:
    from planner.profiles import bundled_dir

    return bundled_dir() / "published_serving.yaml"


@cache
def load_measurements(path: str | None = None) -> PublishedMeasurements:
    """The bundled measurements (or those of `path`); a broken file is one clear line (ProfileError)."""
    from planner.profiles import _read_yaml  # the profiles' reader: size, aliases, depth, encoding

    p = Path(path) if path else data_path()
    raw = _read_yaml(p)
    try:
        return PublishedMeasurements.model_validate(raw)
    except ValidationError as e:
        from planner.profiles import format_validation_error

        raise ProfileError(format_validation_error(p, e), hint="fix the entry named above") from e
