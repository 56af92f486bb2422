"""Every figure of the bundled model and offering profiles names a public source a user can open: a
URL, a paper or a repository, never a file outside the project (such as the shared reference notes
the profiles were first written from). Offerings name a URL for every price (or say "evaplan
assumption"); each offering records its inter-node fabric or says why it does not."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from planner import profiles as prof

# The team's reference notes (../shared) that the profiles were first written from; a public
# repository's own files (e.g. open_clip's docs/PRETRAINED.md) are sources a user can open.
OUTSIDE = re.compile(
    r"\b(EVA_MODELS|PLANNER_MODEL|HARDWARE_PRICING|LAUNCH|DESIGN)\.md\b|shared reference|\.\./shared|/work/"
)
KINDS = ("models", "offerings")


def _sources(node: Any, loc: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            where = f"{loc}.{k}" if loc else str(k)
            if isinstance(v, str) and ("source" in str(k) or k == "note"):
                out.append((where, v))
            else:
                out += _sources(v, where)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _sources(v, f"{loc}[{i}]")
    return out


def _files(kind: str) -> list[Path]:
    return sorted((prof.bundled_dir() / kind).glob("*.yaml"))


@pytest.mark.parametrize("path", [p for k in KINDS for p in _files(k)], ids=lambda p: p.stem)
def test_no_source_names_a_file_outside_the_project(path: Path) -> None:
    text = path.read_text()
    data = yaml.safe_load(text)
    found = _sources(data)
    assert found, "a profile with no sources"
    bad = [(where, s) for where, s in found if OUTSIDE.search(s)]
    assert not bad, bad
    assert not OUTSIDE.search(text), "a comment names a file outside the project"


@pytest.mark.parametrize("path", _files("offerings"), ids=lambda p: p.stem)
def test_offering_prices_cite_a_url_and_fabric_is_recorded(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    for where, s in _sources(data):
        if where.endswith("usd_per_node_hour.source"):
            assert "https://" in s or s.startswith("evaplan assumption"), (where, s)
    if data["kind"] == "cloud":
        assert "fabric" in data or "# fabric: none recorded" in path.read_text()
    fabric = data.get("fabric")
    if fabric is not None:
        assert "https://" in fabric["source"] or fabric["source"].startswith("evaplan assumption")


def test_the_check_catches_an_outside_file(tmp_path: Path) -> None:
    assert OUTSIDE.search("HARDWARE_PRICING.md (evaplan shared reference): $55/hr")
    assert OUTSIDE.search("EVA_MODELS.md sizes table")
    assert not OUTSIDE.search("https://aws.amazon.com/ec2/pricing/on-demand/ (p5.48xlarge): $55.04/hr")
    assert not OUTSIDE.search("docs/planner-model.md")
    assert not OUTSIDE.search("https://github.com/baaivision/EVA/tree/master/EVA-CLIP README.md")
