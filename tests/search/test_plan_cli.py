"""`evaplan plan` and `evaplan compare` end to end on bundled profiles (small grids: --max-nodes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from launcher.commands.plan import parse_duration_s, parse_usd
from planner import profiles as prof
from planner.errors import EvaplanError

REPO = Path(__file__).resolve().parents[2]


def test_parse_duration_and_budget() -> None:
    assert parse_duration_s("30d") == 30 * 86400
    assert parse_duration_s("12h") == 12 * 3600
    assert parse_duration_s("90m") == 90 * 60
    assert parse_usd("2.5M") == 2.5e6
    assert parse_usd("800k") == 8e5
    assert parse_usd("$1,200") == 1200
    for bad in ("30", "soon", "-1d", "0d"):
        with pytest.raises(EvaplanError):
            parse_duration_s(bad)
    for bad in ("lots", "2.5X", "0"):
        with pytest.raises(EvaplanError):
            parse_usd(bad)


def test_bad_deadline_is_one_line_exit_2(cli) -> None:
    r = cli("plan", "--model", "eva02-clip-b16", "--offering", "aws-p5", "--deadline", "soon")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: --deadline 'soon' is not a duration")


def test_plan_json_is_deterministic_and_consistent(cli) -> None:
    args = (
        "plan",
        "--model",
        "eva02-clip-l14",
        "--offering",
        "aws-p5",
        "tensorwave-mi300x",
        "--max-nodes",
        "32",
        "--format",
        "json",
    )
    a, b = cli(*args), cli(*args)
    assert a.exit_code == 0, a.stderr
    assert a.stdout == b.stdout
    doc = json.loads(a.stdout)
    chosen = doc["chosen"]
    assert doc["ranked"][0] == chosen
    assert chosen["micro_batch"] * chosen["grad_accum"] * chosen["gpus"] == chosen["global_batch"]
    assert all(r["cost_usd"] >= chosen["cost_usd"] for r in doc["ranked"])
    # The frontier: wall time rises while cost falls, and the cheapest point is the chosen cost.
    walls = [p["wall_days"] for p in doc["pareto"]]
    costs = [p["cost_usd"] for p in doc["pareto"]]
    assert walls == sorted(walls) and costs == sorted(costs, reverse=True)
    assert costs[-1] == chosen["cost_usd"]
    changes = {a["change"] for a in doc["alternatives"]}
    other_stages = {f"ZeRO-{s}" for s in range(4) if s != chosen["zero_stage"]}
    assert changes & other_stages and ("ckpt off" if chosen["grad_ckpt"] else "ckpt on") in changes


def test_plan_names_why_zero2_lost(cli) -> None:
    r = cli("plan", "--model", "eva-clip-18b", "--offering", "aws-p5", "--max-nodes", "24")
    assert r.exit_code == 0, r.stderr
    assert "ZeRO-2 needs" in r.stdout and "GiB HBM" in r.stdout
    assert "Pareto frontier" in r.stdout and "binding constraints" in r.stdout


def test_multi_values_after_one_flag(cli) -> None:
    r = cli(
        "compare",
        "--model",
        "eva02-clip-b16",
        "--hardware",
        "h100-sxm",
        "mi300x",
        "--max-nodes",
        "8",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [o["option"] for o in doc["options"]] == ["h100-sxm", "mi300x"]
    # "N% cheaper … than h100-sxm", or "as cheap, as fast as h100-sxm" within 0.5 %
    assert doc["options"][1]["relative_to_baseline"]["summary"].endswith("h100-sxm")


def test_compare_relative_figures(cli) -> None:
    r = cli(
        "compare",
        "--model",
        "eva-clip-18b",
        "--offering",
        "aws-p5",
        "--offering",
        "tensorwave-mi300x",
        "--max-nodes",
        "24",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    base, mi = (o["plan"] for o in doc["options"])
    rel = doc["options"][1]["relative_to_baseline"]
    assert rel["cost"] == pytest.approx(mi["cost_usd"] / base["cost_usd"] - 1, rel=1e-3)
    assert rel["wall_time"] == pytest.approx(mi["wall_days"] / base["wall_days"] - 1, rel=1e-3)
    assert doc["options"][0]["usd_per_billion_samples"] == pytest.approx(base["cost_usd"] / 6.0, rel=1e-6)


def test_budget_too_small_names_cheapest_plan_and_gap(cli) -> None:
    r = cli(
        "plan", "--model", "eva02-clip-l14", "--offering", "aws-p5", "--max-nodes", "16", "--budget", "1k"
    )
    assert r.exit_code == 2
    assert "budget $1.0k is too small: the cheapest plan costs" in r.stderr
    # Ten times the budget or more reads as a multiple, not a seven-digit percentage.
    assert re.search(r"\(×[\d,]+ the budget; aws-p5", r.stderr) and "%" not in r.stderr, r.stderr
    # Under ten times: the dollars and the percentage over.
    cheapest = float(re.search(r"costs \$([\d.]+)k", r.stderr).group(1))
    r = cli(
        "plan", "--model", "eva02-clip-l14", "--offering", "aws-p5", "--max-nodes", "16",
        "--budget", f"{cheapest * 0.9:.1f}k",
    )  # fmt: skip
    assert r.exit_code == 2 and re.search(r"\(\$[\d.]+k?, \+\d+\.\d% over; aws-p5", r.stderr), r.stderr


def test_impossible_deadline_names_fastest_plan(cli) -> None:
    r = cli("plan", "--model", "eva-clip-18b", "--offering", "aws-p5", "--max-nodes", "8", "--deadline", "1d")
    assert r.exit_code == 2
    assert (
        "deadline 24.0 h is impossible: the fastest plan takes" in r.stderr
        or "deadline 1.0 d is impossible: the fastest plan takes" in r.stderr
    )


def test_mi300x_min_group_comes_from_profile(cli, user_profiles) -> None:
    # hpZ 2 and 4 are groups under a node: ruled out on MI300X (small_group_gbps), allowed on H100.
    r = cli(
        "plan",
        "--model",
        "eva02-clip-b16",
        "--hardware",
        "mi300x",
        "--max-nodes",
        "4",
        "--zero-stage",
        "3",
        "--no-offload",
        "--format",
        "json",
    )
    doc = json.loads(r.stdout)
    assert all(c["hpz_partition_size"] in (1, 8) for c in doc["ranked"] + doc["pareto"])
    lost = [a for a in doc["alternatives"] if a["change"] in ("hpZ 2", "hpZ 4")]
    assert lost and all("minimum data-parallel group of 8" in a["reason"] for a in lost)


def test_min_group_rule_follows_the_profile_not_the_vendor(cli, user_profiles) -> None:
    # An NVIDIA profile that measures a slow small group gets the same rule; without it, no rule.
    text = (REPO / "profiles" / "hardware" / "h100-sxm.yaml").read_text()
    slow = text.replace("name: h100-sxm", "name: h100-slow-pairs").replace(
        "  inter_node_gbps:",
        "  small_group_gbps: {value: 40, source: test profile, observed: 2026-11-01}\n  inter_node_gbps:",
        1,
    )
    (user_profiles / "hardware" / "h100-slow-pairs.yaml").write_text(slow)
    args = (
        "--model",
        "eva02-clip-b16",
        "--max-nodes",
        "2",
        "--zero-stage",
        "3",
        "--no-offload",
        "--format",
        "json",
    )
    r = cli("--profiles-dir", str(user_profiles), "plan", "--hardware", "h100-slow-pairs", *args)
    assert r.exit_code == 0, r.stderr
    lost = {a["change"]: a["reason"] for a in json.loads(r.stdout)["alternatives"]}
    assert "minimum data-parallel group of 8" in lost.get("hpZ 2", lost.get("hpZ 4", ""))
    plain = json.loads(cli("plan", "--hardware", "h100-sxm", *args).stdout)
    assert not any("minimum data-parallel group" in a["reason"] for a in plain["alternatives"])


def test_plot_writes_png(cli, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plan.png"
    r = cli(
        "compare",
        "--model",
        "eva02-clip-b16",
        "--offering",
        "aws-p5",
        "tensorwave-mi300x",
        "--max-nodes",
        "4",
        "--plot",
        str(out),
    )
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("model_name", sorted(prof.index("models")))
def test_every_bundled_model_gets_a_plan_on_h100_and_mi300x(cli, model_name: str) -> None:
    r = cli(
        "compare",
        "--model",
        model_name,
        "--offering",
        "aws-p5",
        "tensorwave-mi300x",
        "--max-nodes",
        "16",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert all(o["plan"] is not None for o in doc["options"])


def test_constraints_are_respected_and_binding_ones_named(cli) -> None:
    args = (
        "plan",
        "--model",
        "eva02-clip-l14",
        "--offering",
        "aws-p5",
        "--max-nodes",
        "64",
        "--max-gpus",
        "256",
        "--deadline",
        "2d",
        "--hbm-headroom",
        "0.1",
        "--format",
        "json",
    )
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    for c in [*doc["ranked"], *doc["pareto"]]:
        assert c["gpus"] <= 256 and c["wall_days"] <= 2.0 and c["gib_per_gpu"] <= 80 * 0.9
    # Without the deadline the cheapest plan is slower and cheaper: the deadline binds.
    binding = {b["constraint"]: b for b in doc["binding"]}
    assert "deadline" in binding and "> deadline 2.0 d" in binding["deadline"]["reason"]
    assert binding["deadline"]["plan"]["cost_usd"] < doc["chosen"]["cost_usd"]


def test_fixed_gpu_count(cli) -> None:
    r = cli("plan", "--model", "eva02-clip-b16", "--hardware", "h100-sxm", "--gpus", "64", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert {c["gpus"] for c in json.loads(r.stdout)["ranked"]} == {64}
    bad = cli("plan", "--model", "eva02-clip-b16", "--hardware", "h100-sxm", "--gpus", "12")
    assert bad.exit_code == 2 and "not a multiple of the 8 GPUs per node" in bad.stderr


@pytest.mark.parametrize("fmt", ["table", "csv", "markdown"])
def test_text_formats(cli, fmt: str) -> None:
    r = cli("plan", "--model", "eva02-clip-b16", "--offering", "aws-p5", "--max-nodes", "4", "--format", fmt)
    assert r.exit_code == 0, r.stderr
    if fmt == "csv":
        header = r.stdout.splitlines()[0].split(",")
        assert header[:3] == ["section", "rank", "option"] and "cost_usd" in header
    else:
        assert "chosen plan" in r.stdout and "why close alternatives lost" in r.stdout


def test_budget_needs_prices(cli) -> None:
    r = cli("plan", "--model", "eva02-clip-b16", "--hardware", "h100-sxm", "--budget", "10k")
    assert r.exit_code == 2 and "--budget needs prices" in r.stderr
