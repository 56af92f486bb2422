"""planner.deepspeed_config: DeepSpeed's own parser accepts every plan shape we render."""

from __future__ import annotations

import json

import pytest

from planner import deepspeed_defaults as dsd
from planner.deepspeed_config import deepspeed_config
from planner.errors import EvaplanError
from planner.spec import ParallelPlan


def _plan(**kw) -> ParallelPlan:
    base = dict(nodes=2, gpus_per_node=8, zero_stage=1, micro_batch=4, grad_accum=3, grad_ckpt=True)
    base.update(kw)
    return ParallelPlan(**base)


PLANS = [
    pytest.param({"zero_stage": 0}, id="zero0"),
    pytest.param({"zero_stage": 1}, id="zero1"),
    pytest.param({"zero_stage": 2}, id="zero2"),
    pytest.param({"zero_stage": 3}, id="zero3"),
    pytest.param({"zero_stage": 1, "offload_optimizer": "cpu"}, id="zero1-offload-opt"),
    pytest.param({"zero_stage": 2, "offload_optimizer": "cpu", "precision": "fp16"}, id="zero2-offload-fp16"),
    pytest.param(
        {"zero_stage": 3, "offload_optimizer": "cpu", "offload_param": "cpu"}, id="zero3-offload-cpu"
    ),
    pytest.param({"zero_stage": 3, "offload_optimizer": "nvme", "offload_param": "nvme"}, id="zero3-nvme"),
    pytest.param(
        {"zero_stage": 3, "hpz_partition_size": 8, "quantized_weights": True, "quantized_gradients": True},
        id="zero3-zeropp",
    ),
    pytest.param({"zero_stage": 2, "precision": "fp32", "overlap_comm": False}, id="zero2-fp32"),
]


@pytest.mark.parametrize("overrides", PLANS)
def test_deepspeed_parses_rendered_config(overrides, monkeypatch):
    ds_config = pytest.importorskip("deepspeed.runtime.config")
    plan = _plan(**overrides)
    cfg = deepspeed_config(plan, grad_clip=5.0, comms_logger=True, nvme_path="/local_nvme")
    json.dumps(cfg)  # the renderer writes it with tojson: it must be plain JSON
    # DeepSpeedConfig takes the world size from torch.distributed; pretend to be rank 0 of the plan.
    monkeypatch.setattr(ds_config.dist, "get_world_size", lambda *a, **k: plan.world_size)
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda *a, **k: 0)
    parsed = ds_config.DeepSpeedConfig(cfg)
    assert parsed.world_size == plan.world_size
    assert parsed.train_batch_size == plan.global_batch == 4 * 3 * 16
    assert parsed.train_micro_batch_size_per_gpu == 4
    assert parsed.gradient_accumulation_steps == 3
    assert parsed.gradient_clipping == 5.0
    assert parsed.zero_optimization_stage == plan.zero_stage
    assert parsed.bfloat16_config.enabled == (plan.precision == "bf16")
    assert parsed.float16_config.enabled == (plan.precision == "fp16")
    assert parsed.comms_config.comms_logger_enabled
    zc = parsed.zero_config
    if plan.zero_stage:
        assert zc.reduce_bucket_size == dsd.REDUCE_BUCKET_SIZE
        assert zc.overlap_comm == plan.overlap_comm
        assert zc.contiguous_gradients == dsd.CONTIGUOUS_GRADIENTS
    if plan.zero_stage in (1, 2):
        assert zc.allgather_bucket_size == dsd.ALLGATHER_BUCKET_SIZE
    if plan.zero_stage == 3:
        assert zc.prefetch_bucket_size == dsd.STAGE3_PREFETCH_BUCKET_SIZE
        assert zc.param_persistence_threshold == dsd.STAGE3_PARAM_PERSISTENCE_THRESHOLD
        assert zc.max_live_parameters == dsd.STAGE3_MAX_LIVE_PARAMETERS
        assert zc.max_reuse_distance == dsd.STAGE3_MAX_REUSE_DISTANCE
        assert zc.zero_hpz_partition_size == plan.hpz_partition_size
        assert zc.zero_quantized_weights == plan.quantized_weights
        assert zc.zero_quantized_gradients == plan.quantized_gradients
    off_opt = (
        str(getattr(zc.offload_optimizer.device, "value", zc.offload_optimizer.device))
        if zc.offload_optimizer
        else "none"
    )
    off_par = (
        str(getattr(zc.offload_param.device, "value", zc.offload_param.device))
        if zc.offload_param
        else "none"
    )
    assert (off_opt, off_par) == (plan.offload_optimizer, plan.offload_param)
    if "nvme" in (off_opt, off_par):
        assert str((zc.offload_optimizer or zc.offload_param).nvme_path) == "/local_nvme"
    # DeepSpeed builds the optimizer itself exactly when states are offloaded (DeepSpeedCPUAdam).
    assert (parsed.optimizer_name is not None) == (plan.offload_optimizer != "none")
    if parsed.optimizer_name is not None:
        assert parsed.optimizer_name == "adamw"
        assert parsed.zero_force_ds_cpu_optimizer


def test_no_clip_and_no_comms_logger():
    cfg = deepspeed_config(_plan(), grad_clip=None)
    assert cfg["gradient_clipping"] == 0.0
    assert "comms_logger" not in cfg
    assert "optimizer" not in cfg


def test_lamb_with_offload_is_refused():
    with pytest.raises(EvaplanError, match="no CPU LAMB"):
        deepspeed_config(_plan(offload_optimizer="cpu"), grad_clip=1.0, optimizer="lamb")


def test_nvme_offload_needs_a_path():
    with pytest.raises(EvaplanError, match="nvme_path"):
        deepspeed_config(_plan(zero_stage=3, offload_param="nvme"), grad_clip=1.0)


def test_stage_specific_keys_only_where_they_apply():
    z0 = deepspeed_config(_plan(zero_stage=0), grad_clip=None)["zero_optimization"]
    assert z0 == {"stage": 0}
    z2 = deepspeed_config(_plan(zero_stage=2), grad_clip=None)["zero_optimization"]
    assert not any(k.startswith("stage3_") for k in z2)
    assert "zero_hpz_partition_size" not in z2
