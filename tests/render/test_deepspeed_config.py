"""The rendered ds_config.json passes DeepSpeed's own config parser for the plan's world size."""

from __future__ import annotations

import json

import pytest

from launcher.render import render


class _DataParallel:
    """The `mpu` DeepSpeedConfig asks for the data-parallel world size (runtime/config.py)."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size

    def get_data_parallel_world_size(self) -> int:
        return self.world_size


@pytest.mark.train
@pytest.mark.parametrize(
    ("hardware", "nodes", "zero_stage", "offload", "micro", "accum"),
    [
        ("h100-sxm", 4, 3, "none", 32, 2),
        ("mi300x", 2, 2, "cpu", 16, 4),
        ("h100-sxm", 1, 1, "none", 8, 1),
        ("mi300x", 3, 0, "none", 4, 3),
        ("h100-sxm", 2, 3, "nvme", 2, 8),
    ],
)
def test_deepspeed_parses_the_rendered_config(
    hardware, nodes, zero_stage, offload, micro, accum, make_inputs, make_options, monkeypatch
):
    ds_config_mod = pytest.importorskip("deepspeed.runtime.config")
    inputs = make_inputs(
        hardware,
        nodes=nodes,
        zero_stage=zero_stage,
        offload_optimizer=offload,
        micro_batch=micro,
        grad_accum=accum,
    )
    opts = make_options(
        optimizer="adamw" if offload != "none" else None,
        nvme_host_path="/local_nvme" if offload == "nvme" else None,
    )
    text = render(inputs, opts).files["ds_config.json"]
    cfg = json.loads(text)
    world = inputs.plan.world_size
    # DeepSpeedConfig takes the rank from torch.distributed; none is initialised in a unit test.
    monkeypatch.setattr(ds_config_mod.dist, "get_rank", lambda: 0)
    parsed = ds_config_mod.DeepSpeedConfig(cfg, mpu=_DataParallel(world))
    assert parsed.world_size == world
    assert parsed.train_batch_size == inputs.plan.global_batch == inputs.training.global_batch
    assert parsed.train_micro_batch_size_per_gpu == micro
    assert parsed.gradient_accumulation_steps == accum
    assert micro * accum * world == parsed.train_batch_size
    assert parsed.zero_optimization_stage == zero_stage
    assert parsed.bfloat16_config.enabled
    if offload != "none":
        assert parsed.zero_config.offload_optimizer.device == offload


@pytest.mark.train
def test_deepspeed_rejects_a_broken_batch(make_inputs, make_options, monkeypatch):
    """The parser check is not vacuous: a world size that breaks the arithmetic is refused."""
    ds_config_mod = pytest.importorskip("deepspeed.runtime.config")
    inputs = make_inputs()
    cfg = json.loads(render(inputs, make_options()).files["ds_config.json"])
    monkeypatch.setattr(ds_config_mod.dist, "get_rank", lambda: 0)
    with pytest.raises(AssertionError, match="train_batch_size"):
        ds_config_mod.DeepSpeedConfig(cfg, mpu=_DataParallel(inputs.plan.world_size + 8))
