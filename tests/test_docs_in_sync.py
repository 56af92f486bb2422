"""Every example output in README.md and docs/*.md is what its command prints today (docs/regen.py).

Fix a failure with `.venv/bin/python docs/regen.py` (it rewrites the blocks), then read the diff: a
changed figure may also need the prose around it changed.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _regen():
    spec = importlib.util.spec_from_file_location("docs_regen", REPO / "docs" / "regen.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["docs_regen"] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


regen = _regen()


@pytest.fixture(scope="module")
def outputs() -> dict[str, str]:
    """Each distinct block command, run once (in parallel) for the whole module."""
    return regen.run_all(b.cmd for f in regen.doc_files() for b in regen.find_blocks(f))


def test_every_block_matches_its_command(outputs) -> None:
    drifts = regen.check(outputs=outputs)
    assert not drifts, (
        "docs differ from what the commands print (run `.venv/bin/python docs/regen.py`):\n"
        + ("\n".join(d.line() for d in drifts))
    )


def test_the_docs_have_blocks_and_only_evaplan_commands() -> None:
    blocks = [b for f in regen.doc_files() for b in regen.find_blocks(f)]
    files = {b.path.name for b in blocks}
    assert "plan-and-compare.md" in files and "README.md" in files
    assert all(b.cmd.startswith(("evaplan ", "python benchmarks/")) for b in blocks)
    # A marker without its closing comment would silently stop being checked.
    for f in regen.doc_files():
        text = f.read_text(encoding="utf-8")
        assert text.count("<!-- evaplan-output:") == text.count("<!-- /evaplan-output -->"), f


def test_a_changed_number_in_plan_and_compare_is_caught(outputs, tmp_path: Path) -> None:
    src = REPO / "docs" / "plan-and-compare.md"
    text = src.read_text(encoding="utf-8")
    block = regen.find_blocks(src)[0]
    start = text.index(block.body)
    digit = re.search(r"[0-9]", block.body)
    assert digit, "the first block of plan-and-compare.md shows no number"
    i = start + digit.start()
    changed = tmp_path / "plan-and-compare.md"
    changed.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :], encoding="utf-8")
    drifts = regen.check([changed], outputs=outputs)
    assert len(drifts) == 1
    assert "plan-and-compare.md" in drifts[0].line() and block.cmd in drifts[0].line()
    assert "committed" in drifts[0].message and "command prints" in drifts[0].message


def test_a_block_runs_evaplan_or_a_benchmarks_script_only() -> None:
    assert regen.command_argv("python benchmarks/serving_targets.py")[1:] == ["benchmarks/serving_targets.py"]
    for cmd in ("python -c 1", "python ../x.py", "python benchmarks/../x.py", "ls", ""):
        with pytest.raises(ValueError, match="neither an evaplan command"):
            regen.command_argv(cmd)


def test_commands_run_without_the_callers_environment(monkeypatch, tmp_path: Path) -> None:
    """A user calibration or profiles folder of whoever runs the check must not change the docs."""
    monkeypatch.setenv("EVAPLAN_PROFILES_DIR", str(tmp_path / "does-not-exist"))
    monkeypatch.setenv("HOME", str(tmp_path))
    out = regen.run_command("evaplan profiles list --kind hardware")
    assert "does-not-exist" not in out and "error" not in out
