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

from functools import cache
from typing import Literal

from pydantic import Field, model_validator

from planner.published import Attention, NamedEntries, SourcedEntry, Stack
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


class PublishedMeasurement(SourcedEntry):
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

    @property
    def published_images_per_s(self) -> float:
        """Stated, or batch over the stated latency."""
        p = self.published
        if p.images_per_s is not None:
            return p.images_per_s
        assert p.latency_ms is not None  # the validator guarantees one of the two
        return self.batch / (p.latency_ms / 1e3)


class PublishedMeasurements(NamedEntries, bundled_name="published_serving.yaml", entry_kind="measurement"):
    measurements: list[PublishedMeasurement] = Field(min_length=1)


data_path = PublishedMeasurements.bundled_path


@cache
def load_measurements(path: str | None = None) -> PublishedMeasurements:
    """The bundled measurements (or those of `path`); a broken file is one clear line (ProfileError)."""
    return PublishedMeasurements.read(path)
