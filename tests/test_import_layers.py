"""One way down (issue 22, item 3): no import cycle among the project's modules, counting every
import (module level, inside functions, under TYPE_CHECKING), and the planner's layers import only
downward: specs and profiles → physics → estimate → search → validation, calibration and intervals.

Read with `ast`, not by importing: a function-level import hides a cycle from the interpreter until
the function runs, which is how the last one (estimate → intervals → calibration → estimate) lived."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("planner", "launcher", "evaclip")

# The planner's layers, lowest first; a module may import only from its own layer or one below.
LAYERS: dict[str, tuple[str, ...]] = {
    "specs and profiles": (
        "__init__",
        "calibration_spec",
        "deepspeed_defaults",
        "errors",
        "golden",
        "halves",
        "layout",
        "limits",
        "plot_file",
        "prediction_range",
        "profiles",
        "published",
        "published_ratios",
        "published_serving",
        "spec",
        "terms",
        "units",
    ),
    "physics": (
        "comm",
        "compute",
        "cost",
        "data_pipeline",
        "deepspeed_config",
        "evaluate",
        "headroom",
        "inference_time",
        "memory",
        "offload",
        "ops",
        "params",
        "serve",
    ),
    "estimate": ("estimate",),
    "search": ("catalog", "choose", "grid", "plots", "search", "vectorized"),
    "validation, calibration and intervals": (
        "calibration",
        "gpu_ratios",
        "halves",
        "intervals",
        "plan_file",
        "report",
        "serve_report",
        "serving_validation",
        "validation",
    ),
}


def module_files() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imported_names(name: str, path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file names (relative ones resolved)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from planner import profiles`
    return out


def import_graph() -> dict[str, set[str]]:
    mods = module_files()

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = {owner(d) for d in _imported_names(name, path)}
        # a package's __init__ is on the way to each of its modules, not a dependency of theirs
        graph[name] = {d for d in deps if d and d != name and not name.startswith(d + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that returns to its start, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        todo = [iter(sorted(graph[start]))]
        state[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(graph[nxt])))
    return None


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pkg import b\n")
    assert "pkg.b" in _imported_names("pkg.a", a)
    assert find_cycle({"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}}) == [
        "pkg.a",
        "pkg.b",
        "pkg.c",
        "pkg.a",
    ]
    assert find_cycle({"pkg.a": {"pkg.b"}, "pkg.b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_planner_imports_only_downward() -> None:
    layer_of = {
        f"planner.{m}".removesuffix(".__init__"): i for i, ms in enumerate(LAYERS.values()) for m in ms
    }
    names = list(LAYERS)
    planner = {m: deps for m, deps in import_graph().items() if m == "planner" or m.startswith("planner.")}
    unplaced = sorted(set(planner) - set(layer_of))
    assert not unplaced, f"put each planner module in a layer of LAYERS: {unplaced}"
    upward = [
        f"{m} ({names[layer_of[m]]}) imports {d} ({names[layer_of[d]]})"
        for m, deps in sorted(planner.items())
        for d in sorted(deps)
        if d in layer_of and layer_of[d] > layer_of[m]
    ]
    assert not upward, "\n".join(upward)
    # the planner is the core: it never reaches into the launcher
    assert not [(m, d) for m, deps in planner.items() for d in deps if d.startswith("launcher")]
