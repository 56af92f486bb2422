"""`evaplan render --flavor slurm` end to end: the script's figures from the plan, its options from
flags and evaplan.toml, and one-line errors."""

from __future__ import annotations

import json
import math
import re

import pytest

from launcher.bundle import read_bundle

FLAGS = ["--model", "eva-clip-debug", "--hardware", "mi300x", "--gpus", "16"]


def _sbatch(script: str, key: str) -> str | None:
    m = re.search(rf"^#SBATCH --{key}(?:=(.*))?$", script, re.M)
    return None if m is None else (m.group(1) or "")


def test_time_limit_and_signal_trace_to_the_plan(cli, tmp_path):
    out = tmp_path / "b"
    r = cli("render", *FLAGS, "--flavor", "slurm", "--work-dir", "/shared/runs", "-o", str(out))
    assert r.exit_code == 0, r.output
    script = (out / "job.sbatch").read_text()
    wall_s = json.loads((out / "plan.json").read_text())["time"]["wall_s"]
    grace = int(re.search(r"terminationGracePeriodSeconds (\d+)", r.output).group(1))
    assert _sbatch(script, "signal") == f"TERM@{grace}"
    # --time = ceil((planned wall time + the signal's lead) / 60), as the chain printed says.
    assert int(_sbatch(script, "time")) == max(1, math.ceil((wall_s + grace) / 60))
    assert f"--time {_sbatch(script, 'time')} min = ceil(" in r.output
    assert _sbatch(script, "nodes") == "2" and _sbatch(script, "gpus-per-node") == "8"
    assert _sbatch(script, "requeue") == ""
    bundle = read_bundle(out)
    assert bundle.flavor == "slurm" and bundle.manifests == [] and bundle.script == script
    assert bundle.run_config.checkpoint.dir == "/shared/runs/eva-clip-debug/checkpoints"
    assert bundle.run_config.output_dir == "/shared/runs/eva-clip-debug/output"
    assert "--run-config /shared/runs/eva-clip-debug/config/run_config.json" in script


def test_slurm_options_from_the_config_file_and_flags_win(cli, tmp_path, monkeypatch):
    (tmp_path / "evaplan.toml").write_text(
        'partition = "gpu"\naccount = "ml"\nqos = "low"\nconstraint = "mi300x&ib"\nwork_dir = "/fsx/evaplan"\n'
    )
    monkeypatch.chdir(tmp_path)
    r = cli("render", *FLAGS, "--flavor", "slurm", "--qos", "high", "--stdout")
    assert r.exit_code == 0, r.output
    s = r.stdout
    assert (_sbatch(s, "partition"), _sbatch(s, "account"), _sbatch(s, "qos"), _sbatch(s, "constraint")) == (
        "gpu",
        "ml",
        "high",
        "mi300x&ib",
    )
    assert _sbatch(s, "chdir") == "/fsx/evaplan/eva-clip-debug"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flavor", "slurm", "--stdout"], "--flavor slurm needs --work-dir"),
        (["--stdout"], "--flavor indexed-job needs the trainer image"),
        (["--flavor", "slurm", "--work-dir", "relative/dir", "--stdout"], "--work-dir 'relative/dir'"),
        (["--flavor", "slurm", "--work-dir", "/x", "--partition", "gpu;rm", "--stdout"], "not a Slurm name"),
        (["--flavor", "slurm", "--work-dir", "/x", "--constraint", "a b", "--stdout"], "node feature"),
        (["--flavor", "slurm", "--work-dir", "/x", "--python", "py thon", "--stdout"], "--python"),
    ],
)
def test_user_errors_are_one_line_exit_2(cli, args, message):
    r = cli("render", *FLAGS, *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
