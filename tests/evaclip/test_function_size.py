"""The code stays changeable (issue 22 items 4 and 5): no function in evaclip/, planner/ or launcher/
runs over 100 lines, and the loop's core (Trainer.train, train_step) fits on a screen. A long function
is where concerns (a loop's engine, data, resume, signals and metrics; a block's ops) end up sharing
one scope again."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EVACLIP = Path(__file__).resolve().parents[2] / "evaclip"
LAUNCHER = EVACLIP.parent / "launcher"
PLANNER = EVACLIP.parent / "planner"
MAX_LINES = 100
CORE_MAX_LINES = 40  # Trainer.train and Trainer.train_step: the loop and one optimizer step


def _function_lines(path: Path) -> dict[str, int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    out[f"{node.name}.{item.name}"] = item.end_lineno - item.lineno + 1
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out[node.name] = node.end_lineno - node.lineno + 1
    return out


@pytest.mark.parametrize("package", [EVACLIP, PLANNER, LAUNCHER], ids=lambda p: p.name)
def test_no_function_over_100_lines(package: Path):
    """evaclip/ and planner/ (issue 22 item 4) and launcher/ (item 5: commands that parse, call and print)."""
    long = {
        f"{path.relative_to(package)}:{name}": n
        for path in sorted(package.rglob("*.py"))
        for name, n in _function_lines(path).items()
        if n > MAX_LINES
    }
    assert not long, f"functions over {MAX_LINES} lines: {long}"


def test_training_loop_core_is_short():
    lines = _function_lines(EVACLIP / "trainer.py")
    for name in ("Trainer.train", "Trainer.train_step"):
        assert lines[name] <= CORE_MAX_LINES, f"{name} is {lines[name]} lines"
