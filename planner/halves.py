"""Splitting published rows into a fit half and a held-out half, and the error statistics both the
training validation (planner/validation.py) and the serving validation (planner/serving_validation.py)
report: pure functions of the rows, below both so that neither imports the other's internals."""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

HALVES = ("all", "fit", "held-out")
# The range a fitted compute scale is searched in (planner/validation.py fit_compute_scale).
SCALE_BOUNDS = (0.05, 2.0)


def _hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _has_throughput(run: Any) -> Hashable:
    return run.published_samples_per_s is not None


def split_halves(runs: Sequence[Any], kind: Callable[[Any], Hashable] = _has_throughput) -> dict[str, str]:
    """name → "fit" | "held-out": per kind (training runs: with a throughput figure or fit-only; any
    named entries: `kind` of each), sorted by the SHA-256 of the name, the first ⌊n/2⌋ of each kind
    fitted. Deterministic, and never more than half."""
    kinds: dict[Hashable, list[Any]] = {}
    for r in runs:
        kinds.setdefault(kind(r), []).append(r)
    out: dict[str, str] = {}
    for group in kinds.values():
        ordered = sorted(group, key=lambda r: _hash(r.name))
        k = len(ordered) // 2
        for i, r in enumerate(ordered):
            out[r.name] = "fit" if i < k else "held-out"
    return out


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), of a non-empty list."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class ErrorStats:
    n: int
    median_abs: float | None
    worst_abs: float | None
    median_signed: float | None


def stats(values: Sequence[float]) -> ErrorStats:
    if not values:
        return ErrorStats(0, None, None, None)
    a = [abs(v) for v in values]
    return ErrorStats(len(values), statistics.median(a), max(a), statistics.median(values))
