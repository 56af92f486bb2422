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
