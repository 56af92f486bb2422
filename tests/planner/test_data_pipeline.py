"""The data-loading ceiling: the whole decode-and-augment pipeline per core, on the run's loader workers."""

from __future__ import annotations

import numpy as np
import pytest

from planner import data_pipeline as dp
from planner import profiles as prof
from planner.estimate import estimate
from planner.grid import OFFLOAD_DEVICES, SearchSpace, build_grid
from planner.published import load_runs
from planner.spec import ParallelPlan, TrainingSpec
from planner.vectorized import evaluate_grid, make_option


def test_pipeline_rate_by_hand() -> None:
    hw = prof.load_hardware("a100-40gb")
    # 1 / (1/454 + 1/978 + 1/1355) images/s: decode, random resized crop, normalize, one after another.
    want = 1.0 / (1.0 / hw.image_decode_per_core_s.value + 1.0 / 978.0 + 1.0 / 1355.0)
    assert dp.pipeline_per_core_s(hw) == pytest.approx(want, rel=1e-12)
    # The augmentation costs time: the pipeline is slower than decode alone.
    assert dp.pipeline_per_core_s(hw) < hw.image_decode_per_core_s.value


def test_decode_follows_the_host_cpu_generation() -> None:
    # The DGX A100's EPYC 7742 is a Zen 2 part: its decode rate is the Zen 2 measurement (601.24 img/s on a
    # Threadripper 3970X at 4.5 GHz boost) at the 7742's 3.4 GHz boost, below the Zen 4 figure (537).
    for name in ("a100-40gb", "a100-80gb"):
        decode = prof.load_hardware(name).image_decode_per_core_s
        assert decode.value == round(601.24 * 3.4 / 4.5)
        assert "3970X" in decode.source and "7742" in decode.source
    # Hosts measured on their own generation keep that figure (Xeon 8581C, Emerald Rapids).
    assert prof.load_hardware("b200").image_decode_per_core_s.value == 577


def test_loader_workers_bound_the_cores() -> None:
    hw = prof.load_hardware("h100-sxm")  # 112 cores, 8 GPUs: 14 per GPU
    # Unset: the workers `render` gives each rank (OpenCLIP's default).
    assert dp.default_loader_workers(hw) == 4
    assert dp.loader_cores_per_gpu(hw, None) == 4.0
    assert dp.loader_cores_per_gpu(hw, 6) == 6.0
    assert dp.loader_cores_per_gpu(hw, 14) == 14.0
    assert dp.loader_cores_per_gpu(hw, 64) == 14.0  # more processes than cores add nothing
    rate = dp.pipeline_per_core_s(hw)
    assert dp.data_loading_s(hw, 1024, 6) == pytest.approx(1024 / (6 * rate), rel=1e-12)
    assert dp.data_loading_s(hw, 1024) == pytest.approx(1024 / (4 * rate), rel=1e-12)
    few = hw.model_copy(update={"host_cpu_cores": hw.host_cpu_cores.model_copy(update={"value": 16})})
    assert dp.default_loader_workers(few) == 2  # never more workers than a GPU's share of cores


def test_estimate_reports_the_ceiling_and_its_inputs() -> None:
    model, hw = prof.load_model("eva02-clip-b16"), prof.load_hardware("h100-sxm")
    plan = ParallelPlan(
        nodes=1, gpus_per_node=8, zero_stage=1, micro_batch=256, grad_accum=1, grad_ckpt=False
    )
    training = TrainingSpec(
        samples=1e9, global_batch=2048, image_size=224, patch_dropout=0.0, loader_workers=2
    )
    est = estimate(model, hw, plan, training)
    rate = dp.pipeline_per_core_s(hw)
    assert est.compute.data_loading_s == pytest.approx(256 / (2 * rate), rel=1e-12)
    # Two workers cannot feed a B/16 on an H100: the step is the loader's.
    assert est.compute.step_s == est.compute.data_loading_s
    fig = est.figure("time.data_loading_per_step")
    assert fig.inputs["loader_workers"] == 2.0
    assert fig.inputs["pipeline_per_core_s"] == pytest.approx(rate)
    assert "albumentations-team/benchmark" in fig.source


def test_search_agrees_with_estimate_when_the_loader_binds() -> None:
    model = prof.load_model("eva02-clip-b16")
    opt = make_option(prof.load_hardware("h100-sxm"), None, None)
    r = model.recipe
    training = TrainingSpec.from_recipe(r, loader_workers=1)
    grid = build_grid(SearchSpace(max_nodes=8), opt.hardware.gpus_per_node, r.global_batch, 0.05)
    out = evaluate_grid(model, opt, training, grid, detail=True)
    rng = np.random.default_rng(12)
    bound = 0
    for i in rng.choice(len(grid), 40, replace=False):
        plan = ParallelPlan(
            nodes=int(grid.nodes[i]),
            gpus_per_node=grid.gpus_per_node,
            zero_stage=int(grid.zero_stage[i]),
            micro_batch=int(grid.micro_batch[i]),
            grad_accum=int(grid.grad_accum[i]),
            grad_ckpt=bool(grid.grad_ckpt[i]),
            hpz_partition_size=int(grid.hpz_partition_size[i]),
            offload_optimizer=OFFLOAD_DEVICES[int(grid.offload_optimizer[i])],
            offload_param=OFFLOAD_DEVICES[int(grid.offload_param[i])],
        )
        est = estimate(
            model, opt.hardware, plan, training.model_copy(update={"global_batch": plan.global_batch})
        )
        assert float(out["step_s"][i]) == est.compute.step_s
        bound += est.compute.step_s == est.compute.data_loading_s
    assert bound > 0  # one worker per GPU binds somewhere, so the loader's path was compared


def test_published_loader_workers_reach_the_estimate() -> None:
    from planner.validation import plan_for

    runs = {r.name: r for r in load_runs().runs}
    nemo = runs["nemo-g14-a100-1node"]
    assert nemo.loader_workers is not None and nemo.loader_workers.value == 8
    _, training, _ = plan_for(nemo, prof.load_hardware(nemo.hardware))
    assert training.loader_workers == 8
    # A run that does not state its workers is read as using every core of a GPU's share.
    unstated = next(r for r in runs.values() if r.loader_workers is None)
    hw = prof.load_hardware(unstated.hardware)
    _, training, _ = plan_for(unstated, hw)
    assert training.loader_workers == hw.host_cpu_cores.value // hw.gpus_per_node


def test_estimate_says_when_the_loaders_bind(cli) -> None:
    q = ["estimate", "--model", "eva02-clip-b16", "--hardware", "h100-sxm", "--gpus", "8"]
    starved = cli(*q, "--data-workers", "2")
    assert starved.exit_code == 0, starved.output
    assert "(binds: the step waits for 2 loader workers per GPU; --data-workers up to 14)" in starved.output
    fed = cli(*q, "--data-workers", "8")
    assert fed.exit_code == 0, fed.output
    assert "(a floor under the step: 8 loader workers per GPU)" in fed.output
