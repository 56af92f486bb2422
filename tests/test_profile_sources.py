"""Every figure of the bundled profiles names a public source a user can open: a URL, a paper or a
repository, never a file outside the project (such as the shared reference notes the profiles were
first written from). Hardware and offering figures cite a URL, a measurement kept in this project
(benchmarks/...), or say "evaplan assumption" and what they are derived from. Offerings name a URL
for every price (or say "evaplan assumption"); each offering records its inter-node fabric or says
why it does not. The project's own text (code, templates, docs, benchmarks, tests, build files)
names no outside file either, except the few places that say where the tests find the upstream CRD
schemas."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from planner import profiles as prof

ROOT = Path(__file__).resolve().parents[1]
# The team's reference notes (../shared) that the profiles were first written from; a public
# repository's own files (e.g. open_clip's docs/PRETRAINED.md) are sources a user can open.
OUTSIDE = re.compile(
    r"\b(EVA_MODELS|PLANNER_MODEL|HARDWARE_PRICING|LAUNCH|DESIGN)\.md\b|shared reference|\.\./shared|/work/"
)
# A measurement kept in this project: the script that takes it or the log it wrote.
MEASURED = re.compile(r"\bbenchmarks/[\w./-]+\.(?:py|log|json|csv|txt)\b")
KINDS = ("models", "hardware", "offerings")


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


def _figures(node: Any, loc: str = "") -> list[tuple[str, str]]:
    """(where, source) of every `{value: ..., source: ...}` figure."""
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        if "value" in node and "source" in node:
            out.append((loc, str(node["source"])))
        for k, v in node.items():
            out += _figures(v, f"{loc}.{k}" if loc else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _figures(v, f"{loc}[{i}]")
    return out


def figure_source_problem(source: str, root: Path = ROOT) -> str | None:
    """Why a figure's source is not one a user can open or follow, or None when it is."""
    if OUTSIDE.search(source):
        return "names a file outside the project"
    if "https://" in source or "http://" in source or source.startswith("evaplan assumption"):
        return None
    if any((root / path).is_file() for path in MEASURED.findall(source)):
        return None
    return "no URL, no measurement kept in this project (benchmarks/...), not marked 'evaplan assumption'"


def figure_problems(path: Path, root: Path = ROOT) -> list[tuple[str, str, str]]:
    data = yaml.safe_load(path.read_text())
    found = _figures(data)
    assert found, f"{path.name}: a profile with no figures"
    return [(where, why, s) for where, s in found if (why := figure_source_problem(s, root))]


def _files(kind: str) -> list[Path]:
    return sorted((prof.bundled_dir() / kind).glob("*.yaml"))


# published_runs.yaml, published_ratios.yaml, validation_intervals.yaml: the bundled data files beside the profiles.
DATA_FILES = sorted(prof.bundled_dir().glob("*.yaml"))


@pytest.mark.parametrize(
    "path", [p for k in KINDS for p in _files(k)] + DATA_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_no_source_names_a_file_outside_the_project(path: Path) -> None:
    text = path.read_text()
    data = yaml.safe_load(text)
    found = _sources(data)
    # validation_intervals.yaml is generated from the code and the published runs: no sources of its own.
    assert found or path.name == "validation_intervals.yaml", "a profile with no sources"
    bad = [(where, s) for where, s in found if OUTSIDE.search(s)]
    assert not bad, bad
    assert not OUTSIDE.search(text), "a comment names a file outside the project"


@pytest.mark.parametrize("path", _files("hardware") + _files("offerings"), ids=lambda p: p.stem)
def test_every_hardware_and_offering_figure_cites_what_a_user_can_open(path: Path) -> None:
    prof.load_file(path)  # the bundled profile loads as the planner reads it
    assert figure_problems(path) == []


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


# Everything a user reads or runs: code, templates, docs, benchmarks, tests, the build files.
PROJECT_DIRS = (
    "planner",
    "launcher",
    "evaclip",
    "templates",
    "benchmarks",
    "docs",
    "tests",
    "deepspeed_shm_comm",
)
PROJECT_FILES = ("README.md", "pyproject.toml", "Makefile", ".ci/run")
TEXT_SUFFIXES = frozenset(
    {".py", ".j2", ".md", ".toml", ".yaml", ".yml", ".json", ".txt", ".cfg", ".sh", ".cpp", ".h"}
)
# The only places that may name ../shared, each for one reason. They may name the folder (the
# upstream CRD schemas in ../shared/k8s-crds, which the tests read when it is beside the checkout and
# skip without), never one of the reference notes.
MAY_NAME_SHARED = {
    "tests/conftest.py": "the shared_dir fixture: finds ../shared beside the checkout, skips without it",
    "tests/render/conftest.py": "reads the PyTorchJob/JobSet CRD schemas from ../shared/k8s-crds",
    "docs/kubernetes.md": "says which checks read ../shared/k8s-crds and that they are skipped without it",
}
# This file names every pattern it looks for.
SELF = Path(__file__).resolve()


def project_text_files(root: Path = ROOT) -> list[Path]:
    files = [root / f for f in PROJECT_FILES if (root / f).is_file()]
    for d in PROJECT_DIRS:
        files += [
            p
            for p in (root / d).rglob("*")
            if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
        ]
    return sorted(files)


def outside_references(files: list[Path], root: Path = ROOT) -> list[str]:
    """`path:line: text` of every line that names a file outside the project, less the allowed ones."""
    bad = []
    for p in files:
        rel = p.relative_to(root).as_posix()
        if p.resolve() == SELF:
            continue
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            found = [m.group(0) for m in OUTSIDE.finditer(line)]
            if not found or (rel in MAY_NAME_SHARED and set(found) == {"../shared"}):
                continue
            bad.append(f"{rel}:{n}: {line.strip()}")
    return bad


def test_project_names_no_file_outside_the_project() -> None:
    files = project_text_files()
    names = {p.relative_to(ROOT).as_posix() for p in files}
    # The scan reaches every part a user reads, and each allowed file still exists.
    for part in (
        "planner/choose.py",
        "launcher/render.py",
        "evaclip/model.py",
        "templates/k8s/jobset.yaml.j2",
    ):
        assert part in names
    assert {"README.md", "pyproject.toml", "docs/kubernetes.md"} <= names
    assert set(MAY_NAME_SHARED) <= names
    assert outside_references(files) == []


def test_the_project_check_catches_an_outside_file(tmp_path: Path) -> None:
    (tmp_path / "launcher").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "launcher" / "x.py").write_text('"""Flavours (LAUNCH.md)."""\n')
    (tmp_path / "docs" / "kubernetes.md").write_text("CRDs in `../shared/k8s-crds`; see DESIGN.md\n")
    (tmp_path / "docs" / "other.md").write_text("CRDs in `../shared/k8s-crds`\n")
    (tmp_path / "README.md").write_text("https://github.com/baaivision/EVA/tree/master/EVA-CLIP README.md\n")
    (tmp_path / "pyproject.toml").write_text("# see the shared reference\n")
    bad = outside_references(project_text_files(tmp_path), tmp_path)
    assert [b.split(":")[0] for b in bad] == [
        "docs/kubernetes.md",
        "docs/other.md",
        "launcher/x.py",
        "pyproject.toml",
    ]


def test_the_check_catches_an_outside_file(tmp_path: Path) -> None:
    assert OUTSIDE.search("HARDWARE_PRICING.md (evaplan shared reference): $55/hr")
    assert OUTSIDE.search("EVA_MODELS.md sizes table")
    assert not OUTSIDE.search("https://aws.amazon.com/ec2/pricing/on-demand/ (p5.48xlarge): $55.04/hr")
    assert not OUTSIDE.search("docs/planner-model.md")
    assert not OUTSIDE.search("https://github.com/baaivision/EVA/tree/master/EVA-CLIP README.md")


def test_the_figure_check_rejects_what_a_user_cannot_open(tmp_path: Path) -> None:
    assert figure_source_problem("NVIDIA H100 datasheet; dense") is not None
    assert figure_source_problem("NVIDIA H100 datasheet; HARDWARE_PRICING.md (evaplan shared reference)")
    assert figure_source_problem("benchmarks/no_such_script.py: 1.2 GB/s") is not None
    assert figure_source_problem("NVIDIA H100 product page: 3.35TB/s, https://www.nvidia.com/x") is None
    assert figure_source_problem("evaplan assumption: as the H100 (https://x), same NICs") is None
    assert figure_source_problem("benchmarks/measure_cpu.py: host RAM / 2 ranks") is None
    # A bundled profile with one figure's source put back to the shared note: the file check names it.
    original = prof.bundled_dir() / "hardware" / "h100-sxm.yaml"
    text = original.read_text()
    line = next(x for x in text.splitlines() if x.startswith("tdp_w:"))
    broken = line.split("source:")[0] + "source: NVIDIA H100 datasheet, observed: 2026-11-01}"
    copy = tmp_path / "h100-sxm.yaml"
    copy.write_text(text.replace(line, broken))
    assert [(where, why[:6]) for where, why, _ in figure_problems(copy)] == [("tdp_w", "no URL")]
