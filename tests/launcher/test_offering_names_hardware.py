"""An offering names its hardware (issue 27): `estimate`, `render` and `launch` take `--offering` alone
and print what `--offering` with its hardware prints; a --hardware that disagrees is one line, exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ESTIMATE = ["estimate", "--model", "eva-clip-18b", "--gpus", "256"]
RENDER = [
    "render",
    "--model",
    "eva-clip-debug",
    "--gpus",
    "8",
    "--image",
    "ghcr.io/acme/evaclip:1.0",
    "--stdout",
]


def _same_with_and_without_hardware(cli, args: list[str], offering: str, hardware: str) -> str:
    alone = cli(*args, "--offering", offering)
    both = cli(*args, "--offering", offering, "--hardware", hardware)
    assert alone.exit_code == 0, alone.output
    assert both.exit_code == 0, both.output
    # A launch renders into a fresh temporary folder: its name is the only thing that may differ.
    assert re.sub(r"\.render\.\w+", ".render.X", alone.output) == re.sub(
        r"\.render\.\w+", ".render.X", both.output
    )
    return alone.output


def test_estimate_offering_alone(cli) -> None:
    out = _same_with_and_without_hardware(cli, ESTIMATE, "crusoe-mi300x", "mi300x")
    assert "32 nodes × 8 mi300x = 256 GPUs" in out


def test_render_offering_alone(cli) -> None:
    out = _same_with_and_without_hardware(cli, RENDER, "aws-p5", "h100-sxm")
    assert "NVIDIA-H100-80GB-HBM3" in out


def test_launch_offering_alone(cli, state_dir: Path, cpu_hardware: list[str]) -> None:
    args = ["--profiles-dir", cpu_hardware[0], "launch", "--backend", "local"]
    args += ["--model", "eva-clip-debug", "--gpus", "2", "--dry-run"]
    out = _same_with_and_without_hardware(cli, args, "cpu-test", "cpu-2")
    assert "would run torchrun with 2 ranks" in out


@pytest.mark.parametrize(
    "args",
    [
        ESTIMATE,
        RENDER,
        ["launch", "--model", "eva-clip-debug", "--gpus", "8", "--image", "x/y:1", "--dry-run"],
    ],
)
def test_hardware_that_disagrees_is_one_line(cli, state_dir: Path, args: list[str]) -> None:
    r = cli(*args, "--offering", "crusoe-mi300x", "--hardware", "h100-sxm")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    assert "offering 'crusoe-mi300x' runs on mi300x, not on --hardware h100-sxm" in lines[0]


def test_config_file_offering_names_the_hardware(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "evaplan.toml").write_text('offering = "crusoe-mi300x"\n')
    monkeypatch.chdir(tmp_path)
    r = cli(*ESTIMATE)
    assert r.exit_code == 0, r.output
    assert "32 nodes × 8 mi300x = 256 GPUs" in r.output
    r = cli(*ESTIMATE, "--hardware", "h100-sxm")
    assert r.exit_code == 2
    assert "the config file's offering 'crusoe-mi300x' runs on mi300x" in r.output


def test_neither_hardware_nor_offering(cli) -> None:
    r = cli(*ESTIMATE)
    assert r.exit_code == 2 and "no hardware given" in r.output and "--offering" in r.output
