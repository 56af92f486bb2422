"""Shared fixtures: a CLI runner and a way to write user profile folders."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from launcher.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    """Keep the user's own evaplan setup out of every test and of the processes tests start: a
    config file or calibration under ~/.config/evaplan, or $EVAPLAN_PROFILES_DIR, would change the
    figures the tests pin. Tests that exercise those set them again with monkeypatch."""
    import tempfile

    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="evaplan-test-config-")
    # Nor the user's job store: `render -o` signs bundles with the store's key (made on first use).
    os.environ["EVAPLAN_STATE_DIR"] = tempfile.mkdtemp(prefix="evaplan-test-state-")
    os.environ.pop("EVAPLAN_PROFILES_DIR", None)


@pytest.fixture
def cli():
    """Run `evaplan ARGS...`; returns the click Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return run


@pytest.fixture
def user_profiles(tmp_path: Path):
    """A user profiles folder with models/, hardware/, offerings/."""
    for k in ("models", "hardware", "offerings"):
        (tmp_path / k).mkdir()
    return tmp_path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (the CI clone gets a copy there too)."""
    if not SHARED.is_dir():
        pytest.skip("../shared (the team's reference folder) is not beside this checkout")
    return SHARED


# ------------------------------------------------------------------ what the summary says about skips
# Tests that check rendered manifests or profiles against an external schema: Kubernetes core kinds
# (kubernetes-validate), the official EVA model configs (tests/data), and the PyTorchJob/JobSet CRDs
# (../shared/k8s-crds, not copied into the project; absent in a user's clone). A skip
# of one of them means a check a user might think ran did not; the last line counts them and says why.
SCHEMA_FIXTURES = frozenset({"validate_object", "crd_schemas", "shared_dir"})
# Tests against a real Slurm (tests/launcher/slurm_cluster.py), skipped without its packages or root:
# counted on a line of their own for the same reason.
SLURM_FIXTURES = frozenset({"slurm_cluster"})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    fixtures = set(getattr(item, "fixturenames", ()))
    if SCHEMA_FIXTURES & fixtures or item.get_closest_marker("schema"):
        report.user_properties.append(("schema_check", True))
    if SLURM_FIXTURES & fixtures:
        report.user_properties.append(("slurm_check", True))


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _schema_line(terminalreporter, prop: str = "schema_check", label: str = "schema checks") -> str | None:
    def is_schema(r: pytest.TestReport) -> bool:
        return (prop, True) in getattr(r, "user_properties", [])

    reports = [r for key in ("passed", "failed", "skipped") for r in terminalreporter.stats.get(key, [])]
    schema = [r for r in reports if is_schema(r) and (r.when == "call" or r.skipped)]
    if not schema:
        return None
    skipped = [r for r in schema if r.skipped]
    reasons: dict[str, int] = {}
    for r in skipped:
        reason = _skip_reason(r)
        reasons[reason] = reasons.get(reason, 0) + 1
    why = "; ".join(f"{n} because {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return f"{label}: {len(schema) - len(skipped)} ran, {len(skipped)} skipped" + (f" ({why})" if why else "")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's last lines: how many schema checks and real-Slurm checks ran and why any were
    skipped (after pytest's own summary line, so that it is what a person sees last)."""
    terminalreporter = config.pluginmanager.get_plugin("terminalreporter")
    if terminalreporter is None or not hasattr(terminalreporter, "stats"):
        return
    for line in (
        _schema_line(terminalreporter),
        _schema_line(terminalreporter, "slurm_check", "real-Slurm checks"),
    ):
        if line:
            terminalreporter.write_line(line)


# ------------------------------------------------------------------------------ waiting without a clock
# Tests that wait for another process must hold on a loaded 2-core machine (load 8: everything 4-8×
# slower than idle), so they do not wait for a fixed number of seconds: they fail only when the
# thing waited for stops making progress for a window the caller derives from a measured rate.
def wait_until(
    pred: Callable[[], Any],
    *,
    what: str,
    progress: Callable[[], Any] | None = None,
    stall_s: float | Callable[[], float] = 300.0,
    poll_s: float = 0.3,
) -> Any:
    """Poll `pred` until it returns something truthy and return it. `progress()` (a log size, a step
    count...) resets the stall clock whenever its value changes; without it, `stall_s` bounds the
    whole wait. `stall_s` may be a callable, re-read each poll (a window scaled from a measured rate)."""
    last = progress() if progress else None
    since = time.monotonic()
    while True:
        value = pred()
        if value:
            return value
        now = time.monotonic()
        if progress is not None:
            current = progress()
            if current != last:
                last, since = current, now
        window = stall_s() if callable(stall_s) else stall_s
        if now - since > window:
            raise AssertionError(
                f"gave up waiting for {what}: no progress for {now - since:.0f} s (window {window:.0f} s)"
            )
        time.sleep(poll_s)


@pytest.fixture
def wait():
    return wait_until
