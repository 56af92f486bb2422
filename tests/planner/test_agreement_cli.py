"""One question, one answer: `make estimate`'s command, `plan` and `compare` print the same plan and the
same dollars for EVA-CLIP-18B on 256 H100s priced on AWS p5; estimate fills unset settings from the
search and says how; pinned settings are kept; the HBM safety margin applies everywhere."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from planner import profiles as prof
from planner.choose import Request, choose
from planner.headroom import HbmHeadroom, parse_headroom

REPO = Path(__file__).resolve().parents[2]


def make_estimate_args() -> list[str]:
    """The arguments `make estimate` passes to evaplan (read from the Makefile, not copied)."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("estimate:")))
    recipe = next(line for line in lines[start + 1 :] if "evaplan estimate" in line)
    words = shlex.split(recipe.strip())
    return words[words.index(next(w for w in words if w.endswith("evaplan"))) + 1 :]


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_make_estimate_plan_and_compare_print_the_same_dollars(cli):
    args = make_estimate_args()
    assert args[0] == "estimate"
    model, gpus, offering = _flag(args, "--model"), _flag(args, "--gpus"), _flag(args, "--offering")

    r = cli(*args, "--format", "json")
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    est_usd = next(p["total_usd"] for p in est["cost"]["prices"] if p["pricing"] == "on_demand")

    r = cli("plan", "--model", model, "--offering", offering, "--gpus", gpus, "--format", "json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)["chosen"]

    r = cli("compare", "--model", model, "--offering", offering, "--gpus", gpus, "--format", "json")
    assert r.exit_code == 0, r.output
    comp = json.loads(r.output)["options"][0]["plan"]

    for p in (plan, comp):
        assert p["cost_usd"] == pytest.approx(est_usd, abs=0.01)
        for key in (
            "zero_stage",
            "offload_optimizer",
            "offload_param",
            "grad_ckpt",
            "micro_batch",
            "grad_accum",
        ):
            assert p[key] == est["plan"][key], key
        assert p["hpz_partition_size"] == est["plan"]["hpz_partition_size"]
    # and the human tables print the same rounded dollars
    table = cli(*args).output
    dollars = f"${est_usd:,.0f}"
    assert dollars in table


def test_estimate_says_how_each_setting_was_chosen_and_keeps_pinned_ones():
    m, hw, off = prof.load_model("eva-clip-18b"), prof.load_hardware("h100-sxm"), prof.load_offering("aws-p5")
    e = choose(m, hw, Request(gpus=256), off)
    assert e.fits
    how = [c for c in e.chosen if c.startswith("zero_stage=")]
    assert how and "cheapest of" in how[0] and "feasible layouts on 256 GPUs" in how[0]
    assert not any("simplest" in c for c in e.chosen)
    pinned = choose(m, hw, Request(gpus=256, zero_stage=2, grad_ckpt=True), off)
    assert pinned.plan.zero_stage == 2 and pinned.plan.grad_ckpt
    assert not any(c.startswith(("zero_stage=", "grad_ckpt=")) for c in pinned.chosen)
    fast = choose(m, hw, Request(gpus=256, objective="time"), off)
    assert fast.time.wall_s <= e.time.wall_s
    assert any("fastest of" in c for c in fast.chosen)


def test_nothing_fits_is_said_so():
    m, hw = prof.load_model("eva-clip-18b"), prof.load_hardware("h100-sxm")
    e = choose(m, hw, Request(gpus=8, global_batch=64, zero_stage=0))
    assert not e.fits and e.verdict.startswith("does not fit")
    assert any("none fits" in c for c in e.chosen)
    assert not any("simplest" in c for c in e.chosen)


def test_headroom_is_kept_and_shown():
    m, hw = prof.load_model("eva-clip-18b"), prof.load_hardware("h100-sxm")
    e = choose(m, hw, Request(gpus=256, hbm_headroom=HbmHeadroom(fraction=0.25)))
    assert e.memory.gpu_total_bytes <= 0.75 * e.memory.hbm_bytes
    assert "safety margin 20.0 GiB = 25%" in e.verdict
    brim = choose(m, hw, Request(gpus=256, hbm_headroom=parse_headroom("0")))
    assert "no safety margin" in brim.verdict
    # a plan that fits HBM but not HBM less the margin is refused
    tight = choose(
        m,
        hw,
        Request(
            gpus=256,
            hbm_headroom=HbmHeadroom(fraction=0.0, gib=80 - brim.memory.gpu_total_bytes / 2**30 + 1),
            **{
                k: getattr(brim.plan, k)
                for k in (
                    "zero_stage",
                    "offload_optimizer",
                    "offload_param",
                    "grad_ckpt",
                    "micro_batch",
                    "grad_accum",
                    "hpz_partition_size",
                )
            },
        ),
    )
    assert not tight.fits and "usable" in tight.verdict


@pytest.mark.parametrize("cmd", ["estimate", "plan"])
def test_hbm_headroom_flag(cli, cmd):
    base = ["--model", "eva-clip-18b", "--gpus", "256"]
    base += ["--hardware", "h100-sxm"]
    r = cli(cmd, *base, "--hbm-headroom", "30%")
    assert r.exit_code == 0, r.output
    assert "safety margin 24.0 GiB = 30%" in r.output
    r = cli(cmd, *base, "--hbm-headroom", "lots")
    assert r.exit_code == 2 and "--hbm-headroom 'lots'" in r.output
