"""CLI habits: one line for usage errors, "did you mean" for a mistyped command, global options after
the subcommand, a config file for defaults, and shell completion of profile names."""

from __future__ import annotations

import json
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


HUGE = "1" + "0" * 400  # float() of it is inf
PLAN = ["plan", "--model", "eva02-clip-b16", "--offering", "aws-p5"]
SERVE = ["serve", "--model", "eva02-clip-b16", "--hardware", "h100-sxm"]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["launch", "--backend", "local", "--max-cost", "inf"], "--max-cost"),
        (["launch", "--backend", "local", "--max-cost", "1e308"], "--max-cost"),
        (["launch", "--backend", "local", "--max-cost", "nan"], "--max-cost"),
        ([*PLAN, "--budget", HUGE], "--budget"),
        ([*PLAN, "--deadline", HUGE + "d"], "--deadline"),
        ([*PLAN, "--batch-tolerance", "nan"], "--batch-tolerance"),
        ([*PLAN, "--host-headroom", "nan"], "--host-headroom"),
        ([*PLAN, "--checkpoint-every", "inf"], "--checkpoint-every"),
        ([*EST, "--batch-tolerance", "nan"], "--batch-tolerance"),
        ([*EST, "--patch-dropout", "nan"], "--patch-dropout"),
        ([*EST, "--dataset-tb", "1e308"], "--dataset-tb"),
        (["estimate", "--model", "eva-clip-18b", "--hardware", "h100-sxm", "--gpus", HUGE], "--gpus"),
        ([*EST, "--data-workers", HUGE], "--data-workers"),
        ([*PLAN, "--min-dp-group", HUGE], "--min-dp-group"),
        (["render", "--rdma-per-node", HUGE], "--rdma-per-node"),
        (["render", "--max-restarts", HUGE], "--max-restarts"),
        ([*SERVE, "--rps", "nan"], "--rps"),
        ([*SERVE, "--rps", "inf"], "--rps"),
        ([*SERVE, "--rps", "1e308"], "--rps"),
        ([*SERVE, "--p99-ms", "nan"], "--p99-ms"),
        ([*SERVE, "--p99-ms", "inf"], "--p99-ms"),
        (["render", "--s3-upload-gbps", "inf"], "--s3-upload-gbps"),
        (["render", "--checkpoint-write-gbps", "nan"], "--checkpoint-write-gbps"),
        (
            ["render", "--checkpoint-write-gbps", "1e-300"],
            "--checkpoint-write-gbps",
        ),  # a grace period of 1e300 s
        (["status", "--watch", "--interval", "inf"], "--interval"),
        (["watch", "--interval", "nan"], "--interval"),
    ],
    ids=lambda v: f"{v[-2]} {v[-1][:12]}" if isinstance(v, list) else None,
)
def test_infinities_and_nan_are_one_line(cli, args: list[str], flag: str) -> None:
    """Money, rates and times: nan (every comparison with it is false), inf and finite numbers beyond
    any real request are refused where they are parsed, in one line naming the flag."""
    r = cli(*args)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and flag in lines[0] and "internal error" not in lines[0], r.output


def test_several_values_of_one_serve_flag(cli) -> None:
    """`--hardware a b` means two hardware profiles (as in plan and compare), never a model named b."""
    r = cli("serve", "--model", "eva02-clip-b16", "--hardware", "a100-40gb", "h100-sxm", "--format", "json")
    assert r.exit_code == 0, r.output
    import json

    assert {p["hardware"] for p in json.loads(r.output)["points"]} == {"a100-40gb", "h100-sxm"}
    r = cli("serve", "--model", "eva02-clip-b16", "eva02-clip-l14", "--hardware", "h100-sxm")
    assert r.exit_code == 0, r.output
    assert "eva02-clip-l14" in r.output and "eva02-clip-b16" in r.output


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder no file can be created in")
@pytest.mark.parametrize("args", [[*SERVE], ["plan", "--model", "eva02-clip-b16", "--hardware", "h100-sxm"]])
def test_a_plot_that_cannot_be_written_is_one_line(cli, args: list[str]) -> None:
    r = cli(*args, "--plot", "/proc/evaplan.png")
    assert r.exit_code == 2, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error: --plot /proc/evaplan.png: cannot write it"), r.output
    assert "internal error" not in r.output


def test_help_never_prints_a_missing_bound(cli) -> None:
    """A float flag without bounds (FiniteFloat()) reads FLOAT in --help, not "FLOAT RANGE [x<=None]"."""
    import click

    from launcher.cli import main

    names = main.list_commands(click.Context(main))  # the group loads its commands lazily
    assert "estimate" in names and "plan" in names
    for name in names:
        r = cli(name, "--help")
        assert r.exit_code == 0, (name, r.output)
        assert "None" not in r.output, (name, [ln for ln in r.output.splitlines() if "None" in ln])


@pytest.mark.parametrize(
    "args",
    [
        [*EST, "--hbm-headroom", "90GiB"],
        ["render", "--model", "eva02-clip-b16", "--offering", "aws-p5", "--nodes", "1", "--stdout",
         "--hbm-headroom", "72GiB"],
        [*PLAN, "--hbm-headroom", "75GiB"],
        ["compare", "--model", "eva02-clip-b16", "--offering", "aws-p5", "lambda-h100", "--hbm-headroom", "80GiB"],
    ],
    ids=lambda v: v[0],
)  # fmt: skip
def test_a_headroom_of_most_of_the_gpus_hbm_is_refused_in_one_line(cli, args: list[str]) -> None:
    """A margin in GiB that keeps 90 % or more of the GPU's HBM free is refused once the GPU is known,
    as the same share written in % is when parsed: one line, exit 2, no report before it."""
    r = cli(*args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "--hbm-headroom" in lines[0] and "leaving almost none" in lines[0], r.output


def test_a_headroom_too_big_for_one_option_leaves_that_option_out(cli) -> None:
    """compare over an 80 GB H100 and a 192 GB MI300X with 75 GiB kept free: the H100 option is left
    out and named with why, as `estimate` on it refuses; the MI300X one is planned."""
    r = cli("compare", "--model", "eva02-clip-b16", "--offering", "aws-p5", "azure-nd-mi300x-v5",
            "--hbm-headroom", "75GiB")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "left out: aws-p5 (on-demand): --hbm-headroom 75 GiB keeps 75.0 of the 80.0 GiB" in r.output
    assert any(line.startswith("azure-nd-mi300x-v5 (on-demand)  mi300x") for line in r.output.splitlines())


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ([*EST, "--stack", "eager", "--optimizer-impl", "single_tensor"], "applies to --stack amp only"),
        (["render", "--model", "eva02-clip-b16", "--offering", "aws-p5", "--nodes", "1", "--stdout",
          "--optimizer-impl", "foreach"], "applies to --stack amp only"),
        ([*PLAN, "--stack", "fused", "--optimizer-impl", "fused"], "applies to --stack amp only"),
        (["compare", "--model", "eva02-clip-b16", "--offering", "aws-p5", "lambda-h100", "--optimizer-impl", "fused"],
         "applies to --stack amp only"),
        ([*EST, "--stack", "amp", "--optimizer-impl", "fused"], "this model's recipe steps lamb"),
        ([*PLAN, "--stack", "amp", "--optimizer-impl", "foreach"], "this model's recipe steps lamb"),
    ],
    ids=["estimate", "render", "plan", "compare", "estimate-lamb", "plan-lamb"],
)  # fmt: skip
def test_an_optimizer_implementation_where_none_is_read_is_refused_in_one_line(
    cli, args: list[str], why: str
) -> None:
    """--optimizer-impl prices the amp stack's torch AdamW; the other stacks step their own fused
    optimizer and the EVA recipes step LAMB, so naming one there would be ignored and reported as
    another: one line, exit 2, nothing printed or written before it."""
    r = cli(*args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "--optimizer-impl" in lines[0] and why in lines[0], r.output


OPENCLIP_EST = ["estimate", "--model", "openclip-vit-b16", "--hardware", "a100-80gb", "--gpus", "8"]


def test_an_optimizer_implementation_on_the_amp_stack_prices_that_implementation(cli) -> None:
    """On the amp stack an AdamW recipe (OpenCLIP's) is priced with the named implementation: torch
    <= 1.13's single-tensor loop reads more bytes per parameter than the fused kernel, so its step is
    longer, and --explain names it."""

    def step_s(impl: str) -> float:
        r = cli(*OPENCLIP_EST, "--stack", "amp", "--optimizer-impl", impl, "--format", "json")
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)["compute"]["step_s"]

    assert step_s("single_tensor") > step_s("foreach") > step_s("fused")
    r = cli(*OPENCLIP_EST, "--stack", "amp", "--optimizer-impl", "single_tensor", "--explain")
    assert r.exit_code == 0 and "single_tensor" in r.output, r.output


def test_render_prices_the_optimizer_it_renders(cli, tmp_path: Path) -> None:
    """`render --optimizer adamw` on an EVA model (recipe LAMB) writes a plan priced stepping AdamW (30
    bytes per parameter against LAMB's 42 in the step), and then reads --optimizer-impl on the amp stack
    instead of refusing it."""
    base = [
        "render",
        "--model",
        "eva02-clip-b16",
        "--hardware",
        "h100-sxm",
        "--gpus",
        "8",
        "--image",
        "r/i:1",
    ]

    def overhead_s(*extra: str) -> float:
        out = tmp_path / "-".join(extra or ("recipe",))
        r = cli(*base, *extra, "-o", str(out))
        assert r.exit_code == 0, r.output
        return json.loads((out / "plan.json").read_text())["compute"]["overhead_s"]

    assert overhead_s("--optimizer", "adamw") < overhead_s()
    r = cli(
        *base,
        "--stack",
        "amp",
        "--optimizer",
        "adamw",
        "--optimizer-impl",
        "single_tensor",
        "-o",
        str(tmp_path / "x"),
    )
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1.0, "1 s"), (59.0, "59 s"), (60.0, "1 min"), (7200.0, "2.0 h"), (172800.0, "2.0 d")],
)
def test_a_duration_reads_in_its_own_unit(seconds: float, text: str) -> None:
    """A deadline under a minute once read "0 min" in the refusal that quotes it."""
    from planner.search import fmt_duration

    assert fmt_duration(seconds) == text


def test_an_impossible_deadline_under_a_minute_is_quoted_as_given(cli) -> None:
    r = cli("plan", "--model", "eva02-clip-b16", "--hardware", "h100-sxm", "--deadline", "30s")
    assert r.exit_code == 2
    assert "deadline 30 s is impossible" in r.output
