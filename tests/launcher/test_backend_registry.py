"""Backends register themselves (issue 22, item 3 and 5): the base imports none of them, every
backend implements the whole interface, and a backend the service has never heard of is launched
into the store, stopped and recorded with no edit outside its own module."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from launcher.backends import base
from launcher.backends.base import (
    Backend,
    Bundle,
    JobState,
    LaunchOptions,
    LogLine,
    backend_choices,
    backend_class,
    backend_help,
    backend_names,
    declared_backends,
    register,
)
from launcher.service import JobService
from launcher.state import JobRecord, JobStore
from planner.errors import EvaplanError

LAUNCHER = Path(__file__).resolve().parents[2] / "launcher"


def test_the_base_imports_no_backend() -> None:
    tree = ast.parse((LAUNCHER / "backends" / "base.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module is not None}
    assert not {f"launcher.backends.{b}" for b in ("kubernetes", "local", "slurm")} & imported


def test_every_backend_registers_and_implements_the_interface() -> None:
    assert backend_names() == ["kubernetes", "local", "slurm"]
    for name in backend_names():
        cls = backend_class(name)
        assert cls.name == name and issubclass(cls, Backend)
        assert not cls.__abstractmethods__, f"{name} leaves {sorted(cls.__abstractmethods__)} out"


def test_the_service_and_commands_never_ask_which_backend() -> None:
    asks = re.compile(r'backend\s*[=!]=\s*"|backend in \(|getattr\(be\b|type: ignore')
    for path in [LAUNCHER / "service.py", *sorted((LAUNCHER / "commands").glob("*.py"))]:
        assert not asks.search(path.read_text()), f"{path.name} branches on the backend"


class _Recorder(Backend):
    """A third backend, defined here only: it records what the service asks of it."""

    name = "recorder-test"
    calls: ClassVar[list[str]] = []

    def launch(self, bundle: Bundle, opts: LaunchOptions) -> dict[str, Any]:
        self.calls.append("launch")
        return {}

    def abort(self, record: Any) -> list[Any]:
        return []

    def state(self, record: Any) -> JobState:
        self.calls.append("state")
        return JobState(phase="Running")

    def logs(self, record: Any, *, follow: bool, tail: int | None, rank: int | None) -> Iterator[LogLine]:
        yield LogLine(0, "hello")

    def recent_metrics(self, record: Any, n: int = 20) -> list[dict[str, Any]]:
        return []

    def stop(self, record: Any) -> None:
        self.calls.append("stop")

    @classmethod
    def budget_enforcement(cls, deadline_s: int) -> str:
        return f"stops after {deadline_s} s"


def test_a_new_backend_joins_by_registering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # registered for this test only
    assert register(_Recorder) is _Recorder
    store = JobStore(tmp_path)
    rec = JobRecord(name="j", backend="recorder-test", bundle_dir=str(tmp_path), plan={}, estimate={})
    store.put(rec)
    service = JobService(store)
    _, lines = service.logs("j", follow=False, tail=None, rank=None)
    assert [line.text for line in lines] == ["hello"]
    result = service.stop("j")
    assert (result.backend, result.had_finished) == ("recorder-test", None)
    assert _Recorder.calls == ["state", "stop"]
    assert store.get("j").last_phase == "Stopped"


def test_an_unknown_backend_is_one_line() -> None:
    with pytest.raises(EvaplanError, match="unknown backend 'nope'") as e:
        backend_class("nope")
    assert e.value.hint == "use --backend kubernetes, --backend local or --backend slurm"


def test_the_backend_choices_come_from_the_package_unimported() -> None:
    from launcher.commands import launch

    (option,) = [p for p in launch.command.params if p.name == "backend"]
    assert option.type.choices == tuple(backend_choices()) == ("kubernetes", "slurm", "local")
    probe = "import json, sys; from launcher.commands import launch; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    backends = {f"launcher.backends.{module}" for module in declared_backends().values()}
    assert not (backends | {"kubernetes"}) & loaded  # no backend (nor its client) loaded for the choices


# A backend nobody has heard of, as a file dropped into launcher/backends: its module is not named
# as its backend, so only its declaration says where it lives.
_DROPPED = """
from launcher.backends.base import Backend, JobState, LogLine, register

BACKEND = "made-up"
BACKEND_LISTED = 9

CALLS = []


@register
class MadeUp(Backend):
    name = BACKEND

    def launch(self, bundle, opts):
        return {}

    def abort(self, record):
        return []

    def state(self, record):
        CALLS.append("state")
        return JobState(phase="Running")

    def logs(self, record, *, follow, tail, rank):
        yield LogLine(0, "made-up says hello")

    def recent_metrics(self, record, n=20):
        return []

    def stop(self, record):
        CALLS.append("stop")

    @classmethod
    def budget_enforcement(cls, deadline_s):
        return f"stops after {deadline_s} s"
"""


def test_a_backend_module_dropped_into_the_package_joins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import launcher.backends as package

    (tmp_path / "dropped_backend.py").write_text(textwrap.dedent(_DROPPED))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # registered for this test only
    monkeypatch.delitem(sys.modules, "launcher.backends.dropped_backend", raising=False)
    assert declared_backends()["made-up"] == "dropped_backend"
    assert backend_choices() == ["kubernetes", "slurm", "local", "made-up"]
    assert "launcher.backends.dropped_backend" not in sys.modules  # listed without being imported
    store = JobStore(tmp_path / "store")
    rec = JobRecord(name="j", backend="made-up", bundle_dir=str(tmp_path), plan={}, estimate={})
    store.put(rec)
    service = JobService(store)
    _, lines = service.logs("j", follow=False, tail=None, rank=None)
    assert [line.text for line in lines] == ["made-up says hello"]
    assert service.stop("j").backend == "made-up"
    assert sys.modules["launcher.backends.dropped_backend"].CALLS == ["state", "stop"]
    assert store.get("j").last_phase == "Stopped"
    sys.modules.pop("launcher.backends.dropped_backend")


def test_the_backend_help_says_where_each_declared_backend_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launcher.commands import launch

    (option,) = [p for p in launch.command.params if p.name == "backend"]
    shipped = "a Kubernetes cluster, a Slurm cluster (sbatch)"
    assert option.help == backend_help() == f"Where to run: {shipped}, or torchrun on this machine."
    import launcher.backends as package

    declared = textwrap.dedent(_DROPPED).replace(
        "BACKEND_LISTED = 9\n", 'BACKEND_LISTED = 9\nBACKEND_RUNS = "a made-up place"\n'
    )
    (tmp_path / "dropped_backend.py").write_text(declared)
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    assert backend_help() == f"Where to run: {shipped}, torchrun on this machine, or a made-up place."
