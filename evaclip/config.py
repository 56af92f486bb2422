"""The trainer's run configuration: everything `python -m evaclip.train` needs besides the
DeepSpeed config. Pure pydantic (no torch import), so the renderer and the launcher can build
and validate it without the `train` extra.

A run config is self-contained: it embeds the full model (and, for MFU, hardware) profile, so a
pod whose image lacks the user's profile folder still trains the exact architecture planned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.errors import EvaplanError
from planner.spec import HardwareSpec, ModelSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class DataConfig(_Strict):
    """Where image-text pairs come from."""

    kind: Literal["synthetic", "webdataset"] = "synthetic"
    # webdataset: a local folder or s3://bucket/prefix holding *.tar shards of (jpg|png, txt).
    url: str | None = None
    num_workers: int = Field(default=0, ge=0)
    synthetic_classes: int = Field(default=16, gt=1, description="learnable concepts in the synthetic set")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.kind == "webdataset" and not self.url:
            raise ValueError("data.kind=webdataset needs data.url (a folder or s3://bucket/prefix)")
        return self


class CheckpointConfig(_Strict):
    """Periodic checkpoints, on SIGTERM too; optional S3 upload with `latest` written last."""

    dir: str = "checkpoints"
    every_steps: int | None = Field(default=None, gt=0)
    every_s: float | None = Field(default=None, gt=0)
    keep: int = Field(default=3, ge=1)
    s3_uri: str | None = Field(default=None, description="s3://bucket/prefix to upload to and resume from")
    resume: bool = True


def empty_init_path_check(flag: str, value: str) -> None:
    """An empty --init-*-from (e.g. `--init-from "$UNSET"`) would train from scratch silently."""
    if not value.strip():
        raise EvaplanError(
            f"{flag} is empty",
            hint="give a file path or an s3:// URI; an unset shell variable gives an empty one",
        )


class InitFrom(_Strict):
    """Released weights to start from (evaclip.pretrained, docs/weights.md): the whole model, or
    the vision and/or the text tower, each a local file or an s3:// URI. Applied before a resume
    checkpoint is looked for, so a resumed run continues from its checkpoint, not from these."""

    model: str | None = Field(default=None, description="whole model, official EVA-CLIP layout")
    vision: str | None = Field(default=None, description="vision tower: EVA-CLIP or EVA MIM weights")
    text: str | None = Field(default=None, description="text tower: EVA-CLIP or OpenCLIP layout")
    strict: bool = Field(default=True, description="stop on any missing, unexpected or reshaped key")

    @model_validator(mode="after")
    def _check(self) -> InitFrom:
        if self.model and (self.vision or self.text):
            raise ValueError("init_from.model loads both towers; drop init_from.vision / init_from.text")
        for name in ("model", "vision", "text"):
            uri = getattr(self, name)
            if uri is not None and not uri.strip():
                raise ValueError(f"init_from.{name} is empty; give a file path or an s3:// URI")
        return self

    @property
    def any(self) -> bool:
        return bool(self.model or self.vision or self.text)


class RunConfig(_Strict):
    """One training run of the bundled EVA-CLIP trainer."""

    job_name: str = Field(min_length=1, max_length=63)
    model: ModelSpec
    hardware: HardwareSpec | None = Field(default=None, description="for achieved TFLOP/s → MFU")
    total_steps: int = Field(gt=0, description="optimizer steps to run")
    image_size: int = Field(gt=0)
    patch_dropout: float = Field(ge=0, lt=1)
    grad_ckpt: bool = False
    local_loss: bool = True
    gather_with_grad: bool = True
    optimizer: Literal["lamb", "adamw"] = "adamw"
    image_lr: float = Field(gt=0)
    text_lr: float = Field(gt=0)
    image_layer_decay: float = Field(default=1.0, gt=0, le=1)
    text_layer_decay: float = Field(default=1.0, gt=0, le=1)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(default=1e-6, gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    grad_clip: float | None = Field(default=None, gt=0)
    seed: int = 0
    data: DataConfig = DataConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    output_dir: str = "out"
    metrics_file: str = "metrics.jsonl"
    log_every_steps: int = Field(default=1, gt=0)
    comms_logger: bool = False
    init_from: InitFrom = InitFrom()
    # torch.compile of every transformer block (evaclip.speed): auto = on a GPU below ZeRO-3.
    compile: Literal["auto", "on", "off"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.image_size % self.model.vision.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by the model's patch size {self.model.vision.patch_size}"
            )
        return self

    def metrics_path(self) -> Path:
        return Path(self.output_dir) / self.metrics_file
