"""Upper bounds on the numbers a user can ask for, so that no figure overflows or turns negative.

The memory model multiplies batch sizes (the CLIP logits are micro-batch × global batch), and numpy
columns are 64-bit: a global batch of 10^12 overflowed into "clip_loss -4,150,598,893 GiB". These
bounds sit far above any published CLIP run (EVA-CLIP-18B: global batch 108k, 6B samples seen,
arXiv 2402.04252 Table 2) and far below where the arithmetic breaks.
"""

from __future__ import annotations

import math
from typing import Any

from planner.errors import InfeasibleError

# name → (smallest, largest, why the largest)
LIMITS: dict[str, tuple[float, float, str]] = {
    "gpus": (1, 262_144, "4,096 nodes × 64 GPUs"),
    "nodes": (1, 4_096, "the planner's node limit"),
    "global_batch": (1, 16_777_216, "2^24, 150× the largest published CLIP batch"),
    "micro_batch": (1, 16_777_216, "the global batch limit"),
    "grad_accum": (1, 16_777_216, "the global batch limit"),
    "samples": (1, 1e14, "10^14 pairs, over 10,000× the 6B EVA-CLIP-18B saw"),
    "image_size": (1, 8_192, "8,192 px"),
    "dataset_tb": (0, 1e6, "an exabyte"),
    "checkpoint_every_s": (1, 3.2e7, "a year"),
    # Money, rates and times typed on the command line (launch --max-cost, plan --budget/--deadline,
    # serve --rps/--p99-ms, render's bandwidths, status/watch --interval): finite, and far below where
    # a product with hours or GPU counts overflows a float or an integer.
    "usd": (
        0,
        1e10,
        "$10 billion, 50× the costliest reported training run (Gemini Ultra, ~$191M: Stanford AI Index 2024)",
    ),
    "duration_s": (0, 3.2e9, "a century"),
    "rps": (0, 1e9, "a billion images per second"),
    "p99_ms": (0, 3.6e6, "an hour per batch"),
    "gbps": (1e-3, 1e4, "10 TB/s per node, 20× a node's eight 400 Gb/s NICs"),  # from 1 MB/s
    "interval_s": (0.1, 86_400, "a day"),
}


def _num(x: float) -> str:
    if isinstance(x, int) and abs(x) >= 1e15:  # an integer of 400 digits has no float
        digits = str(abs(x))
        return f"{'-' if x < 0 else ''}{digits[0]}.{digits[1:4]}e+{len(digits) - 1}"
    return f"{x:,.0f}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def check_value(name: str, value: Any, flag: str | None = None) -> None:
    """One clear error when a number is outside its range (EvaplanError → exit 2)."""
    if value is None or isinstance(value, bool):
        return
    lo, hi, why = LIMITS[name]
    flag = flag or "--" + name.replace("_", "-").removesuffix("-s")
    if isinstance(value, float) and not math.isfinite(value):
        raise InfeasibleError(f"{flag} {value} is not a finite number", hint=f"give {_num(lo)} … {_num(hi)}")
    if value < lo or value > hi:
        raise InfeasibleError(
            f"{flag} {_num(value)} is out of range",
            hint=f"give {_num(lo)} … {_num(hi)} (the upper bound is {why})",
        )


def check_request(req: Any) -> None:
    """Every numeric field of a planner.choose.Request that has a limit."""
    for name in LIMITS:
        check_value(name, getattr(req, name, None))
