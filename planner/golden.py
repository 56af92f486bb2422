"""Golden-section search for the minimum of a unimodal function of log(x): the one-dimensional fit
that `evaplan calibrate` (a user's runs) and `evaplan validate` (the published runs) both make of a
compute scale."""

from __future__ import annotations

import math
from collections.abc import Callable


def minimize_log(loss: Callable[[float], float], bounds: tuple[float, float], iterations: int) -> float:
    """The x in `bounds` minimising `loss(log x)`, after `iterations` golden-section steps (each
    narrows the bracket by 0.618)."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    return math.exp((lo + hi) / 2)


def minimize_log_scanned(
    loss: Callable[[float], float], bounds: tuple[float, float], points: int, iterations: int
) -> float:
    """As minimize_log, for a loss with several local minima (a median of absolute errors over rows
    that disagree is piecewise and jagged): `points` log-spaced trial values over `bounds` first,
    then golden-section steps inside the bracket of the best one and its two neighbours."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    grid = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
    values = [loss(x) for x in grid]
    best = min(range(points), key=values.__getitem__)
    a, b = grid[max(0, best - 1)], grid[min(points - 1, best + 1)]
    return minimize_log(loss, (math.exp(a), math.exp(b)), iterations)
