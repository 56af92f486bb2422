"""Shared fixtures: a CLI runner and a way to write user profile folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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
        pytest.skip("../shared is not beside this checkout")
    return SHARED
