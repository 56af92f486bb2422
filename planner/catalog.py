"""Name a set of offerings, not a list: `all`, shell-style patterns (`aws-*`, `*-mi300x`) and the filters
a buyer asks by (GPU vendor, GPU, provider, a published price kind), resolved against the offering
profiles (bundled and the user's). Used by `plan`, `compare` and `serve`.

A plain name is taken as named (a typo is the loader's "no offering profile named ..." error); `all`
and patterns are sets, narrowed by the filters, and a set that ends up empty is one line saying which
filter emptied it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from planner import profiles as prof
from planner.errors import EvaplanError
from planner.spec import OfferingSpec

ALL = "all"
_GLOB = set("*?[")


@dataclass(frozen=True)
class OfferingFilter:
    """What a set of offerings is narrowed to; None lets everything through."""

    vendor: str | None = None  # the hardware profile's vendor: nvidia, amd
    gpu: str | None = None  # a hardware profile name or pattern: h100-sxm, mi3*
    provider: str | None = None  # the offering's provider, any case: AWS, azure
    pricing: str | None = None  # a price the offering publishes: on_demand, spot, committed, on_prem

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.vendor, self.gpu, self.provider, self.pricing))

    def describe(self) -> str:
        parts = [
            f"--{flag} {value}"
            for flag, value in (
                ("vendor", self.vendor),
                ("gpu", self.gpu),
                ("provider", self.provider),
                ("pricing", self.pricing),
            )
            if value is not None
        ]
        return " ".join(parts)

    def admits(self, offering: OfferingSpec, vendor: str) -> bool:
        from planner.vectorized import available_pricings  # numpy: only once a set is filtered

        return (
            (self.vendor is None or vendor == self.vendor.lower())
            and (self.gpu is None or fnmatch.fnmatchcase(offering.hardware, self.gpu.lower()))
            and (self.provider is None or offering.provider.lower() == self.provider.lower())
            and (self.pricing is None or self.pricing in available_pricings(offering))
        )


def is_set(name: str) -> bool:
    """`all` or a shell-style pattern."""
    return name == ALL or bool(_GLOB & set(name))


def select_offerings(
    names: Sequence[str], user_dirs: Sequence[str | Path] | None = None, flt: OfferingFilter | None = None
) -> list[str]:
    """Offering names for what was typed, in order, without repeats: a plain name as it is, `all` and
    patterns as the matching profiles (sorted) that pass the filter. No names but a filter: `all`."""
    flt = flt or OfferingFilter()
    known = list(prof.index("offerings", user_dirs))
    names = list(names) or ([ALL] if flt.given else [])
    out: list[str] = []
    for name in names:
        if not is_set(name):
            out.append(name)
            continue
        matched = known if name == ALL else [n for n in known if fnmatch.fnmatchcase(n, name)]
        if not matched:
            raise EvaplanError(
                f"no offering matches '{name}'",
                hint=f"offerings: {', '.join(known)} (`evaplan profiles list --kind offerings`)",
            )
        kept = [n for n in matched if _admitted(n, user_dirs, flt)]
        if not kept:
            raise EvaplanError(
                f"no offering matching '{name}' passes {flt.describe()}",
                hint=f"it matches {', '.join(matched)}; drop or change the filter",
            )
        out += kept
    return list(dict.fromkeys(out))


def _admitted(name: str, user_dirs: Sequence[str | Path] | None, flt: OfferingFilter) -> bool:
    if not flt.given:
        return True
    off = prof.load_offering(name, user_dirs)
    return flt.admits(off, prof.load_hardware(off.hardware, user_dirs).vendor)
