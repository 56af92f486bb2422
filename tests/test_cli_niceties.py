"""CLI habits: one line for usage errors, "did you mean" for a mistyped command, global options after
the subcommand, a config file for defaults, and shell completion of profile names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EST = ["estimate", "--model", "eva-clip-18b", "--hardware", "h100-sxm", "--gpus", "256"]


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_mistyped_command_suggests(cli) -> None:
    r = cli("estmate")
    assert r.exit_code == 2 and "did you mean estimate" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_usage_errors_are_one_line(cli) -> None:
    r = cli(*EST, "--global-batch", "lots")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "--global-batch" in r.output and "evaplan estimate -h" in r.output


def test_global_options_after_the_subcommand(cli, user_profiles: Path) -> None:
    (user_profiles / "offerings" / "ours.yaml").write_text(
        "extends: aws-p5\non_demand_usd_per_node_hour: {value: 40}\n"
    )
    for args in (
        ["--profiles-dir", str(user_profiles), *EST, "--offering", "ours"],
        [*EST, "--offering", "ours", "--profiles-dir", str(user_profiles)],
        [*EST, "--offering", "ours", f"--profiles-dir={user_profiles}"],
    ):
        r = cli(*args)
        assert r.exit_code == 0, r.output
        assert "$40.00/node-h" in r.output


def test_config_file_sets_defaults_and_flags_win(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "evaplan.toml").write_text('offering = "aws-p5"\nhbm_headroom = "25%"\n')
    monkeypatch.chdir(proj)
    r = cli(*EST)
    assert r.exit_code == 0, r.output
    assert "$55.04/node-h" in r.output and "= 25%" in r.output
    r = cli(*EST, "--hbm-headroom", "5%")
    assert "= 5%" in r.output
    (proj / "evaplan.toml").write_text("colour = 'blue'\n")
    r = cli(*EST)
    assert r.exit_code == 2 and "unknown key 'colour'" in r.output
    other = tmp_path / "other.toml"
    other.write_text('pricing = "spot"\n')
    r = cli("--config", str(other), *EST, "--offering", "aws-p5", "--format", "json")
    assert r.exit_code == 0, r.output


def test_user_config_is_read(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "xdg" / "evaplan").mkdir(parents=True)
    (tmp_path / "xdg" / "evaplan" / "config.toml").write_text('offering = "aws-p5"\n')
    monkeypatch.chdir(tmp_path)
    r = cli(*EST)
    assert r.exit_code == 0 and "$55.04/node-h" in r.output


def test_shell_completion_lists_profile_names(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "evaplan"
    if not exe.exists():
        pytest.skip("evaplan is not installed in this environment")
    env = {**os.environ, "_EVAPLAN_COMPLETE": "bash_complete", "XDG_CONFIG_HOME": str(tmp_path)}
    for words, expect in (
        ("evaplan estimate --model eva02-clip-l", "eva02-clip-l14-336"),
        ("evaplan plan --offering aws-p5", "aws-p5en"),
        ("evaplan render --hardware mi3", "mi325x"),
    ):
        out = subprocess.run(
            [str(exe)],
            env={**env, "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        ).stdout
        assert f"plain,{expect}" in out.splitlines(), out
