"""`estimate()` end to end and `evaplan estimate`: the report, JSON round trip, clear errors."""

from __future__ import annotations

import json

import pytest

from planner import profiles as prof
from planner.choose import Request, choose
from planner.errors import InfeasibleError
from planner.estimate import Estimate, estimate
from planner.spec import ParallelPlan, TrainingSpec

MAIN = [
    "estimate",
    "--model",
    "eva-clip-18b",
    "--hardware",
    "h100-sxm",
    "--gpus",
    "256",
    "--offering",
    "aws-p5",
]


def _err(result) -> str:
    return (getattr(result, "stderr", None) or result.output).strip()


def test_estimate_round_trips_and_is_consistent():
    m, hw, off = prof.load_model("eva-clip-18b"), prof.load_hardware("h100-sxm"), prof.load_offering("aws-p5")
    plan = ParallelPlan(
        nodes=32, gpus_per_node=8, zero_stage=3, micro_batch=211, grad_accum=2, grad_ckpt=True
    )
    tr = TrainingSpec(samples=6e9, global_batch=108_032, image_size=224, patch_dropout=0.5)
    e = estimate(m, hw, plan, tr, off)
    assert Estimate.model_validate_json(e.model_dump_json()) == e
    assert e.fits and e.params.total == 18_325_482_241
    # The micro-batch terms (planner/ops.py, tested term by term in test_ops.py) add up: two
    # micro-batches of max(device, host); no per-micro-batch overhead without a calibration; LAMB
    # (42 B/param, no clipping in the recipe) over Ψ/256 at the achieved HBM bandwidth.
    c = e.compute
    assert c.compute_s == pytest.approx(
        2 * max(c.gemm_s + c.attention_s + c.memory_bound_s, c.host_s), rel=1e-12
    )
    assert c.gemm_s > c.attention_s > 0 and c.memory_bound_s > 0
    assert 0.5 < c.gemm_efficiency < hw.matmul.tflops.value / hw.bf16_dense_tflops.value
    assert e.figure("time.microbatch_overhead").value == 0.0
    assert m.recipe.optimizer == "lamb" and m.recipe.grad_clip is None
    opt_s = 42 * 18_325_482_241 / 256 / (hw.hbm_achieved_tbps.value * 1e12)
    assert e.figure("time.step_overhead").value == pytest.approx(opt_s, rel=1e-12)
    assert c.overhead_s == pytest.approx(opt_s, rel=1e-12)
    assert c.step_s == pytest.approx(
        max(c.compute_s + c.overhead_s + e.comm.exposed_s + c.offload_s, c.data_loading_s), rel=1e-12
    )
    assert c.mfu < c.gemm_efficiency
    assert e.compute.samples_per_s == pytest.approx(108_032 / e.compute.step_s)
    assert e.time.steps == 55_540  # ceil(6e9 / 108,032)
    od = next(p for p in e.cost.prices if p.pricing == "on_demand")
    assert od.compute_usd == pytest.approx(od.node_hours * 55.04)
    assert {p.pricing for p in e.cost.prices} == {"on_demand", "spot", "committed"}
    # every figure of the derivation carries a formula
    assert all(f.formula for f in e.derivation)
    assert e.figure("params.total").value == 18_325_482_241


def test_choose_picks_the_searched_best_and_says_so():
    m, hw = prof.load_model("eva-clip-18b"), prof.load_hardware("h100-sxm")
    e = choose(m, hw, Request(gpus=256))
    assert e.fits and abs(e.plan.global_batch - m.recipe.global_batch) <= 0.02 * m.recipe.global_batch
    assert any(c.startswith("global_batch=") for c in e.chosen)
    assert any(c.startswith("micro_batch=") and "GPU-hours of" in c for c in e.chosen)
    # exact batch when asked
    exact = choose(m, hw, Request(gpus=256, global_batch=108_032, batch_tolerance=0))
    assert exact.plan.global_batch == 108_032
    # 18B on 8 GPUs: only ZeRO-3 fits, and the search finds it …
    e2 = choose(m, hw, Request(gpus=8, global_batch=64))
    assert e2.fits and e2.plan.zero_stage == 3
    # … but never a setting the user fixed: stage 0 for 18B on 8 GPUs cannot fit
    e3 = choose(m, hw, Request(gpus=8, global_batch=64, zero_stage=0))
    assert not e3.fits


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"gpus": 100}, "not a multiple of the 8 GPUs"),
        ({"gpus": 256, "global_batch": 108_000, "batch_tolerance": 0}, "cannot reach the global batch"),
        ({"gpus": 256, "global_batch": 10**12}, "--global-batch 1,000,000,000,000 is out of range"),
        ({"gpus": 256, "micro_batch": 5}, "not reachable with micro-batch 5"),
        ({}, "no cluster size"),
    ],
)
def test_choose_rejects_impossible_requests(kw, needle):
    m, hw = prof.load_model("eva-clip-18b"), prof.load_hardware("h100-sxm")
    with pytest.raises(InfeasibleError) as exc:
        choose(m, hw, Request(**kw))
    assert needle in exc.value.line() and "(" in exc.value.line()  # names the problem and the fix


def test_cli_main_report(cli):
    r = cli(*MAIN)
    assert r.exit_code == 0, r.output
    for word in ("memory/GPU", "comm/step", "samples/s", "on_demand", "fits:", "chosen"):
        assert word in r.output


def test_cli_json_and_explain(cli):
    r = cli(*MAIN, "--format", "json")
    assert r.exit_code == 0
    e = Estimate.model_validate(json.loads(r.output))
    assert e.offering == "aws-p5"
    r = cli(*MAIN, "--explain")
    assert r.exit_code == 0 and "formula:" in r.output and "source:" in r.output
    r = cli(*MAIN, "--format", "csv")
    assert r.exit_code == 0 and r.output.startswith("figure,value,unit,source")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--gpus", "100"], "not a multiple"),
        (["--gpus", "256", "--global-batch", "108000", "--batch-tolerance", "0"], "cannot reach"),
        (["--gpus", "256", "--global-batch", "1000000000000"], "out of range"),
        (["--gpus", "256", "--samples", "-5"], "out of range"),
        (["--gpus", "8", "--zero-stage", "0", "--no-grad-ckpt", "--global-batch", "512"], "does not fit"),
        (["--gpus", "256", "--offering", "azure-nd-mi300x-v5"], "runs on mi300x"),
        (["--gpus", "256", "--zero-stage", "2", "--offload-param", "cpu"], "zero_stage 3"),
    ],
)
def test_cli_bad_requests_exit_2_with_one_line(cli, args, needle):
    r = cli("estimate", "--model", "eva-clip-18b", "--hardware", "h100-sxm", *args)
    assert r.exit_code == 2
    err = _err(r).splitlines()[-1]
    assert err.startswith("error: ") and needle in err


def test_cli_unknown_model(cli):
    r = cli("estimate", "--model", "eva-clip-99b", "--hardware", "h100-sxm", "--gpus", "8")
    assert r.exit_code == 2 and "no model profile named 'eva-clip-99b'" in _err(r)


def test_cli_reads_user_profiles(cli, user_profiles):
    import yaml

    src = prof.index("models")["eva-clip-debug"].path
    data = yaml.safe_load(src.read_text())
    data["name"] = "my-tiny-clip"
    (user_profiles / "models" / "my-tiny-clip.yaml").write_text(yaml.safe_dump(data))
    r = cli(
        "--profiles-dir",
        str(user_profiles),
        "estimate",
        "--model",
        "my-tiny-clip",
        "--hardware",
        "h100-sxm",
        "--gpus",
        "8",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.output
    e = Estimate.model_validate_json(r.output)
    assert e.model == "my-tiny-clip" and e.params.total == 1_724_465
