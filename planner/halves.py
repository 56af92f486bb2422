"""The fit/held-out split and the statistics the training and serving validations share.

`split_halves`: per kind, sorted by the SHA-256 of the name, the first ⌊n/2⌋ fitted (never more than
half). `stats`: median and worst |error|. `prediction_interval`: the order-statistic range that holds
INTERVAL_COVERAGE of later exchangeable values. `comparable_range`: the range from the fit-half entries
comparable to a class of prediction (planner/intervals.py RangeClass), widened in the documented order
until MIN_COMPARABLE_RUNS share it.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from planner.intervals import INTERVAL_COVERAGE, MIN_COMPARABLE_RUNS, SIZE_LABELS, STACKS, RangeClass

HALVES = ("all", "fit", "held-out")
# The bracket of a fitted compute scale (planner/validation.py, planner/serving_validation.py): a
# multiplier on every modelled device rate, from 1/20 to twice the profiles' rates.
SCALE_BOUNDS = (0.05, 2.0)


def _has_throughput(run: Any) -> Hashable:
    return run.published_samples_per_s is not None


def _hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


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


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), of a non-empty list."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def prediction_interval(values: Sequence[float], coverage: float = INTERVAL_COVERAGE) -> tuple[float, float]:
    """The j-th smallest to the j-th largest of n values, j the largest with (n + 1 − 2j)/(n + 1) ≥
    coverage (at least 1): a later exchangeable value falls inside with that chance (order statistics)."""
    xs = sorted(values)
    n = len(xs)
    j = 1
    while (n + 1 - 2 * (j + 1)) / (n + 1) >= coverage:
        j += 1
    return xs[j - 1], xs[n - j]


@dataclass(frozen=True)
class ClassRange:
    """The range of one class: from the fit-half runs comparable to it, and which runs those were."""

    ratio_low: float
    ratio_high: float
    runs: int
    comparable: str  # the class the runs share after any widening


def comparable_range(fit: Sequence[tuple[RangeClass, float]], cls: RangeClass) -> ClassRange:
    """The range from the fit-half runs comparable to `cls`, widened until MIN_COMPARABLE_RUNS share it:
    same binding, size class and stack; then any stack; then the size class ± 1, ± 2, …; then all runs."""
    tries: list[tuple[str, Any]] = [
        ("same binding, size class and stack", lambda k: k == cls),
        (
            "same binding and size class, any stack",
            lambda k: (k.binding, k.size) == (cls.binding, cls.size),
        ),
    ]
    for w in range(1, len(SIZE_LABELS)):
        tries.append(
            (
                f"same binding, size class ±{w}, any stack",
                lambda k, w=w: k.binding == cls.binding and abs(k.size - cls.size) <= w,
            )
        )
    for how, match in tries:
        sel = [r for k, r in fit if match(k)]
        if len(sel) >= MIN_COMPARABLE_RUNS:
            return ClassRange(*prediction_interval(sel), len(sel), how)
    every = [r for _, r in fit]
    return ClassRange(
        *prediction_interval(every), len(every), "every fit-half run (no narrower class has enough)"
    )


@dataclass(frozen=True)
class Intervals:
    """The fitted time ranges: one per class from the comparable fit-half entries, the range of all of
    them, and the held-out half's coverage (each held-out entry against its own class's range)."""

    all_runs: ClassRange
    classes: dict[str, ClassRange]
    n_fit: int
    held_out_inside: int
    n_held_out: int
    coverage: float = INTERVAL_COVERAGE

    @property
    def ratio_low(self) -> float:
        return self.all_runs.ratio_low

    @property
    def ratio_high(self) -> float:
        return self.all_runs.ratio_high


def fit_class_ranges(
    fit: Sequence[tuple[RangeClass, float]],
    held: Sequence[tuple[RangeClass, float]],
    bindings: Sequence[str],
    every: str,
) -> Intervals:
    """The range of every class (each binding of `bindings`, size class, stack) from the comparable
    `fit` entries (class, published / predicted time), and how many `held` entries fall inside their
    own class's range. `every`: what the range of all fit entries is called."""
    classes = {
        RangeClass(b, s, st).key: comparable_range(fit, RangeClass(b, s, st))
        for b in bindings
        for s in range(len(SIZE_LABELS))
        for st in STACKS
    }
    inside = sum(1 for k, r in held if classes[k.key].ratio_low <= r <= classes[k.key].ratio_high)
    ratios = [r for _, r in fit]
    return Intervals(
        ClassRange(*prediction_interval(ratios), len(ratios), every), classes, len(fit), inside, len(held)
    )
