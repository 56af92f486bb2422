"""Published training runs that nobody here wrote, bundled with their sources (profiles/published_runs.yaml).

Each entry is one run as its authors describe it: the model and GPU profiles that match it, the
layout (GPUs, micro-batch, accumulation, ZeRO stage, checkpointing, patch dropout, precision,
software stack, the data loader's workers per GPU where the run's command line or config states
them), what was published about it (throughput, wall time, GPU-hours, memory) and the
source with a quote and its date. Every run trained, so every layout must be predicted to fit.
Settings a source leaves unstated are listed in `assumptions`, so a reader sees which inputs are
evaplan's reading rather than the authors' words. `evaplan validate` (planner/validation.py)
compares the planner with these figures.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, ValidationError, model_validator

from planner.errors import ProfileError
from planner.spec import AttentionKernel as Attention
from planner.spec import (
    Name,
    OptimizerImpl,
    OptimizerName,
    Precision,
    Stack,
    StrictModel,
    optimizer_impl_unread,
)

MemoryKind = Literal["allocated", "device_total"]


class PublishedFigures(StrictModel):
    """What the source states about the run (each optional; at least one figure or `trained`)."""

    samples_per_s: float | None = Field(default=None, gt=0, description="whole job, all GPUs")
    wall_hours: float | None = Field(default=None, gt=0)
    gpu_hours: float | None = Field(default=None, gt=0)
    peak_memory_gib: float | None = Field(default=None, gt=0, description="per GPU")
    memory_kind: MemoryKind | None = Field(
        default=None,
        description="allocated: torch max_memory_allocated (no runtime context); device_total: all of it",
    )
    trained: bool = Field(default=True, description="the run completed, so its layout fits")

    @model_validator(mode="after")
    def _memory_kind(self) -> PublishedFigures:
        if (self.peak_memory_gib is None) != (self.memory_kind is None):
            raise ValueError("peak_memory_gib and memory_kind go together")
        return self


class LoaderWorkers(StrictModel):
    """DataLoader worker processes per GPU as the run's own command line or config states them."""

    value: int = Field(gt=0)
    source_url: str = Field(pattern=r"^https://")
    quote: str = Field(min_length=10, description="the source's words, verbatim")


class OptimizerImplementation(StrictModel):
    """How a plain-PyTorch run's AdamW ran (stack amp), as its trainer and torch version give it."""

    value: OptimizerImpl
    source_url: str = Field(pattern=r"^(https://|benchmarks/)")
    quote: str = Field(min_length=10, description="the source's words, verbatim")


class StatedOptimizer(StrictModel):
    """The optimizer a run stepped where it is not its model recipe's (a measurement that swapped it),
    as the run's own code gives it."""

    value: OptimizerName
    source_url: str = Field(pattern=r"^(https://|benchmarks/)")
    quote: str = Field(min_length=10, description="the source's words, verbatim")


class SourcedEntry(StrictModel):
    """Where a published entry's figures come from: the source, its words and date, and what it leaves
    unstated (the fields every bundled published run and measurement carries)."""

    source_url: str = Field(pattern=r"^(https://|benchmarks/)")
    quote: str = Field(min_length=10, description="the source's words, verbatim")
    source_date: date = Field(description="the date of the source (commit, page, paper)")
    assumptions: list[str] = Field(default_factory=list, description="settings the source does not state")


class PublishedRun(SourcedEntry):
    """One published run: layout, figures and source."""

    name: Name
    model: Name = Field(description="model profile")
    hardware: Name = Field(description="hardware profile")
    gpus: int = Field(gt=0)
    micro_batch: int = Field(gt=0, description="per GPU")
    grad_accum: int = Field(default=1, gt=0)
    zero_stage: int = Field(ge=0, le=3, description="0 = plain data parallel (DDP)")
    grad_ckpt: bool
    patch_dropout: float = Field(ge=0, lt=1)
    precision: Precision
    stack: Stack = Field(
        description="eager PyTorch on 16-bit weights, eager under autocast with fp32 weights (amp), "
        "torch.compile, or fused kernels (NeMo/TE)"
    )
    attention: Attention | None = Field(
        default=None,
        description="attention kernel; default: the model profile's (xattn: mem_efficient, else math)",
    )
    image_size: int | None = Field(default=None, gt=0, description="default: the model's recipe")
    optimizer: StatedOptimizer | None = Field(
        default=None, description="the optimizer the run stepped; default: its model recipe's"
    )
    optimizer_impl: OptimizerImplementation | None = Field(
        default=None,
        description="how a stack-amp run's torch AdamW ran (fused, foreach, single_tensor); default: the planner's "
        "(torch ≥ 2.0's foreach)",
    )
    loader_workers: LoaderWorkers | None = Field(
        default=None,
        description="stated DataLoader workers per GPU; default: every host core of a GPU's share",
    )
    samples: float | None = Field(default=None, gt=0, description="samples seen, for wall time")
    published: PublishedFigures

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.gpus

    @property
    def published_samples_per_s(self) -> float | None:
        """Stated, or samples over wall time when the source gives those instead."""
        p = self.published
        if p.samples_per_s is not None:
            return p.samples_per_s
        if self.samples is not None and p.wall_hours is not None:
            return self.samples / (p.wall_hours * 3600.0)
        return None

    @model_validator(mode="after")
    def _check(self) -> PublishedRun:
        p = self.published
        if p.wall_hours is not None and self.samples is None:
            raise ValueError(f"run {self.name}: a published wall time needs `samples`")
        impl = self.optimizer_impl.value if self.optimizer_impl is not None else None
        why = optimizer_impl_unread(self.stack, impl)
        if why is not None:
            raise ValueError(f"run {self.name}: optimizer_impl {impl} applies to stack amp only ({why})")
        return self


class NamedEntries(StrictModel):
    """A data file bundled beside the profiles (profiles/`bundled_name`): its one field is a list of
    entries that are found by name, so each name stands once (`entry_kind` names an entry in the
    error). A subclass gives both as class arguments: `class X(NamedEntries, bundled_name=..., entry_kind=...)`."""

    bundled_name: ClassVar[str]
    entry_kind: ClassVar[str]

    def __init_subclass__(cls, *, bundled_name: str, entry_kind: str, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.bundled_name, cls.entry_kind = bundled_name, entry_kind

    @model_validator(mode="after")
    def _unique(self) -> NamedEntries:
        (entries,) = (getattr(self, f) for f in type(self).model_fields)
        refuse_repeated_names([e.name for e in entries], self.entry_kind)
        return self

    @classmethod
    def bundled_path(cls) -> Path:
        from planner.profiles import bundled_dir

        return bundled_dir() / cls.bundled_name

    @classmethod
    def read(cls, path: str | None = None) -> Self:
        """The bundled file (or the one at `path`); a broken file is one clear line (ProfileError)."""
        from planner.profiles import (
            _read_yaml,  # the profiles' reader: size, aliases, depth, encoding
            format_validation_error,
        )

        p = Path(path) if path else cls.bundled_path()
        raw = _read_yaml(p)
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ProfileError(format_validation_error(p, e), hint="fix the entry named above") from e


class PublishedRuns(NamedEntries, bundled_name="published_runs.yaml", entry_kind="run"):
    runs: list[PublishedRun] = Field(min_length=1)


def refuse_repeated_names(names: list[str], what: str) -> None:
    """ValueError naming the first name that appears twice (entries are found by name)."""
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{what} name {n} appears twice")
        seen.add(n)


data_path = PublishedRuns.bundled_path


@cache
def load_runs(path: str | None = None) -> PublishedRuns:
    """The bundled runs (or those of `path`); a broken file is one clear line (ProfileError)."""
    return PublishedRuns.read(path)
