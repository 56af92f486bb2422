"""The HBM safety margin: the share (or GiB) of each GPU's memory a plan must leave free because the
memory prediction itself has an error band.

Default, from evaplan's own measurements on one H100 80GB (benchmarks/results/gpu_check-h100-*.log,
`benchmarks/gpu_check.py`, peak `torch.cuda.max_memory_allocated` vs the planner's prediction):

    run                         measured   predicted   measured / predicted
    B/16 DeepSpeed ZeRO-0 mb256   26.44       32.01        0.83
    L/14 DeepSpeed ZeRO-0 mb128   45.94       52.51        0.87
    B/16 plain torch mb256        34.32       32.01        1.072
    L/14 plain torch mb128        57.30       52.51        1.091

The worst under-prediction is +9.1 % (L/14): a plan predicted at `p` GiB may peak at 1.091 p, so
fitting needs p ≤ HBM / 1.091 = 0.917 HBM, i.e. 8.4 % of HBM kept free. The default rounds that up
to 10 % (8 GiB on an 80 GB H100, 19.2 GiB on a 192 GB MI300X) because two models on one GPU type are a
small sample; `--hbm-headroom` changes it (`0` restores the old fill-to-the-brim behaviour).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from planner.errors import EvaplanError
from planner.units import GIB

DEFAULT_HBM_HEADROOM_FRACTION = 0.10  # see the module docstring for the derivation
DEFAULT_HBM_HEADROOM_TEXT = "10%"
# A margin keeping this share of HBM or more free leaves a plan almost nothing: refused as bad input.
MOST_KEPT_FREE = 0.9
_HEADROOM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|gib|gb|g)?\s*$", re.IGNORECASE)
WHY = "memory-prediction error"


@dataclass(frozen=True)
class HbmHeadroom:
    """HBM kept free per GPU: a fraction of HBM, or a fixed number of GiB."""

    fraction: float = DEFAULT_HBM_HEADROOM_FRACTION
    gib: float = 0.0

    def reserve_bytes(self, hbm_bytes: float) -> float:
        return hbm_bytes * self.fraction + self.gib * GIB

    def describe(self) -> str:
        if self.gib:
            return f"{self.gib:g} GiB"
        return (
            f"{self.fraction:.0%}"
            if self.fraction * 100 == round(self.fraction * 100)
            else f"{self.fraction:.1%}"
        )

    @property
    def none(self) -> bool:
        return not self.fraction and not self.gib

    def refusal(self, hbm_bytes: float, gpu: str, flag: str = "--hbm-headroom") -> EvaplanError | None:
        """Why this margin is refused on this GPU (None: it leaves room): it keeps MOST_KEPT_FREE or
        more of the HBM free. A share is refused when it is parsed, a number of GiB once the GPU is
        known."""
        if self.reserve_bytes(hbm_bytes) < MOST_KEPT_FREE * hbm_bytes:
            return None
        return EvaplanError(
            f"{flag} {self.describe()} keeps {self.reserve_bytes(hbm_bytes) / GIB:,.1f} of the "
            f"{hbm_bytes / GIB:,.1f} GiB of HBM per {gpu} GPU free, leaving almost none",
            hint=f"keep less free, e.g. {DEFAULT_HBM_HEADROOM_TEXT} (of HBM) or a few GiB; 0 keeps nothing free",
        )


DEFAULT_HEADROOM = HbmHeadroom()


def parse_headroom(text: str | float | None, flag: str = "--hbm-headroom") -> HbmHeadroom:
    """'10%' → 10 % of HBM; '8GiB' or '8' → 8 GiB; '0' → none; None → the default.

    A bare number below 1 (e.g. 0.1) is read as a fraction, as the older flag took it."""
    if text is None:
        return DEFAULT_HEADROOM
    if isinstance(text, int | float):
        text = str(text)
    m = _HEADROOM.match(text)
    hint = "write it like 10% (of HBM) or 8GiB; 0 keeps nothing free"
    if not m:
        raise EvaplanError(f"{flag} {text!r} is not a share of HBM or an amount of GiB", hint=hint)
    value, unit = float(m.group(1)), (m.group(2) or "").lower()
    if unit == "%" or (not unit and 0 < value < 1):
        fraction = value / 100 if unit == "%" else value
        if fraction >= MOST_KEPT_FREE:
            raise EvaplanError(
                f"{flag} {text} keeps {fraction:.0%} of HBM free, leaving almost none", hint=hint
            )
        return HbmHeadroom(fraction=fraction)
    if value > 1024:
        raise EvaplanError(f"{flag} {text} is more GiB than any GPU has", hint=hint)
    return HbmHeadroom(fraction=0.0, gib=value)
