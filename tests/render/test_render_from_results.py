"""`render --plan` takes what estimate, plan and compare write with --format json (`--pick N` for a
ranked plan or a compared option), and `plan --render DIR` writes the same bundle as render --plan."""

from __future__ import annotations

import json

import pytest

from launcher.bundle import read_bundle
from planner.data_pipeline import default_loader_workers
from planner.profiles import load_hardware

Q = ["--model", "eva-clip-debug", "--gpus", "16"]
IMG = "ghcr.io/acme/evaclip:1.0"


def _json(cli, *args):
    r = cli(*args, "--format", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_plan_result_renders_chosen_and_picked_plans(cli, tmp_path):
    doc = _json(cli, "plan", *Q, "--offering", "aws-p5")
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    r = cli("render", "--plan", str(path), "--image", IMG, "-o", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    b = read_bundle(tmp_path / "a")
    chosen = doc["chosen"]
    assert b.ds_config["train_micro_batch_size_per_gpu"] == chosen["micro_batch"]
    assert b.ds_config["zero_optimization"]["stage"] == chosen["zero_stage"]
    est = json.loads((tmp_path / "a" / "plan.json").read_text())
    od = next(p for p in est["cost"]["prices"] if p["pricing"] == "on_demand")
    assert abs(od["total_usd"] - chosen["cost_usd"]) < 0.01  # the same dollars plan printed
    n = len(doc["ranked"])
    assert n >= 2
    r = cli("render", "--plan", str(path), "--pick", str(n), "--image", IMG, "-o", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    last = doc["ranked"][-1]
    got = json.loads((tmp_path / "b" / "plan.json").read_text())["plan"]
    assert (got["nodes"], got["zero_stage"], got["micro_batch"]) == (
        last["nodes"],
        last["zero_stage"],
        last["micro_batch"],
    )
    r = cli("render", "--plan", str(path), "--pick", str(n + 1), "--image", IMG, "--stdout")
    assert r.exit_code == 2 and f"use --pick 1 … {n}" in r.output


def test_compare_result_renders_the_picked_option(cli, tmp_path):
    doc = _json(cli, "compare", *Q, "--offering", "aws-p5", "tensorwave-mi300x")
    path = tmp_path / "cmp.json"
    path.write_text(json.dumps(doc))
    r = cli("render", "--plan", str(path), "--pick", "2", "--image", IMG, "-o", str(tmp_path / "m"))
    assert r.exit_code == 0, r.output
    est = json.loads((tmp_path / "m" / "plan.json").read_text())
    assert est["hardware"] == "mi300x" and est["offering"] == "tensorwave-mi300x"


def test_plan_render_dir_equals_render_plan(cli, tmp_path):
    doc = _json(cli, "plan", *Q, "--offering", "aws-p5")
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    r = cli("plan", *Q, "--offering", "aws-p5", "--render", str(tmp_path / "x"), "--image", IMG)
    assert r.exit_code == 0, r.output
    r = cli("render", "--plan", str(tmp_path / "plan.json"), "--image", IMG, "-o", str(tmp_path / "y"))
    assert r.exit_code == 0, r.output
    for f in (tmp_path / "x").iterdir():
        assert f.read_bytes() == (tmp_path / "y" / f.name).read_bytes(), f.name
    r = cli("plan", *Q, "--offering", "aws-p5", "--render", str(tmp_path / "z"))
    assert r.exit_code == 2 and "--render needs --image" in r.output
    assert not (tmp_path / "z").exists()


def test_data_workers_are_one_setting_for_the_estimate_and_the_rendered_job(cli, tmp_path):
    # `--data-workers` sets the estimate's data-loading floor and the DataLoader workers each rank of
    # the rendered job runs, straight or through --plan; the default is the same in both.
    shards = ("--data-url", "s3://acme-data/shards", "--image", IMG)
    default = default_loader_workers(load_hardware("h100-sxm"))
    assert default == 4  # OpenCLIP's default; the DGX H100 profile has 14 cores per GPU
    floors = {}
    for workers in (None, 8):
        flag = () if workers is None else ("--data-workers", str(workers))
        est = _json(cli, "estimate", *Q, "--hardware", "h100-sxm", *flag)
        assert est["training"]["loader_workers"] == workers
        floors[workers] = est["compute"]["data_loading_s"]
        out = tmp_path / f"w{workers}"
        r = cli("render", *Q, "--hardware", "h100-sxm", *flag, *shards, "-o", str(out))
        assert r.exit_code == 0, r.output
        assert read_bundle(out).run_config.data.num_workers == (workers or default)
        (tmp_path / f"est{workers}.json").write_text(json.dumps(est))
        again = tmp_path / f"again{workers}"
        r = cli("render", "--plan", str(tmp_path / f"est{workers}.json"), *shards, "-o", str(again))
        assert r.exit_code == 0, r.output
        assert read_bundle(again).run_config.data.num_workers == (workers or default)
    assert floors[8] == pytest.approx(floors[None] * default / 8)  # the floor ∝ 1 / workers
    r = cli("render", *Q, "--hardware", "h100-sxm", "--image", IMG, "-o", str(tmp_path / "synthetic"))
    assert r.exit_code == 0, r.output
    assert read_bundle(tmp_path / "synthetic").run_config.data.num_workers == 0  # made in-process


def test_render_warns_when_a_pod_asks_for_more_cpus_than_the_node_has(cli, tmp_path):
    # mi300x: 96 host cores for 8 GPUs; 12 workers make 8 × (2 + 12) = 112 CPUs per pod.
    q = ("render", *Q, "--hardware", "mi300x", "--data-url", "s3://acme-data/shards", "--image", IMG)
    r = cli(*q, "--data-workers", "12", "-o", str(tmp_path / "many"))
    assert r.exit_code == 0, r.output
    assert "each pod requests 112 CPUs, more than the 96 host cores of a mi300x node" in r.output
    r = cli(*q, "-o", str(tmp_path / "default"))
    assert r.exit_code == 0, r.output
    assert "host cores" not in r.output
    r = cli(*q, "--data-workers", "12", "--cpu-per-node", "200", "-o", str(tmp_path / "told"))
    assert r.exit_code == 0, r.output
    assert "host cores" not in r.output  # the user said what the nodes have
