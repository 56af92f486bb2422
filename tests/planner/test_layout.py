"""One settings object (issue 22 item 2): the physics entry points take a `Layout`, so adding a
setting touches its definition and the terms that read it, not a keyword list in every caller."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from planner import evaluate as ev
from planner import profiles as prof
from planner import vectorized
from planner.estimate import estimate
from planner.layout import Layout, run_settings
from planner.spec import ParallelPlan, TrainingSpec

# Entry points of the memory and step-time physics that the scalar estimate and the vectorised
# search both call: each takes the model, the hardware and the settings object, nothing else.
PHYSICS = (ev.gpu_memory_terms, ev.step_terms)
ONE_NODE = dict(nodes=1, gpus_per_node=8, zero_stage=3, micro_batch=8, grad_accum=1, grad_ckpt=False)


@pytest.mark.parametrize("fn", PHYSICS, ids=lambda f: f.__name__)
def test_physics_takes_the_settings_object(fn):
    params = inspect.signature(fn).parameters
    assert list(params) == ["model", "hardware", "layout"]
    assert params["layout"].annotation in (Layout, "Layout")


def test_no_caller_spells_out_the_settings():
    """Adding a Layout field must not touch the estimate or the search: no Layout field name is
    passed as a keyword to the physics from planner/estimate.py or planner/vectorized.py."""
    import planner.estimate as est

    for module in (est, vectorized):
        src = inspect.getsource(module)
        for call in ("ev.gpu_memory_terms(", "ev.step_terms("):
            for chunk in src.split(call)[1:]:
                args = chunk.split(")")[0]
                assert "=" not in args, f"{module.__name__} passes keywords to {call}"


def test_layout_is_frozen_and_complete():
    """Every ParallelPlan setting the physics reads reaches the Layout (offload devices as flags)."""
    nvme_cpu = dict(offload_optimizer="nvme", offload_param="cpu", quantized_weights=True)
    three = {"nodes": 3, "micro_batch": 7, "grad_accum": 2, "grad_ckpt": True}
    plan = ParallelPlan(**{**ONE_NODE, **nvme_cpu, **three})
    plan = plan.model_copy(update=dict(hpz_partition_size=8, local_loss=False))
    tr = TrainingSpec(samples=1e6, global_batch=3 * 8 * 14, image_size=336, patch_dropout=0.5, stack="amp")
    lo = Layout.of(plan, tr)
    assert (lo.nodes, lo.zero_stage, lo.micro_batch, lo.grad_accum) == (3, 3, 7, 2)
    assert (lo.offload_optimizer, lo.nvme_optimizer, lo.offload_param, lo.nvme_param) == (
        True,
        True,
        True,
        False,
    )
    assert (lo.hpz_partition_size, lo.quantized_weights, lo.local_loss) == (8, True, False)
    assert {k: getattr(lo, k) for k in run_settings(tr)} == run_settings(tr)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lo.nodes = 4  # type: ignore[misc]


def test_every_layout_field_comes_from_the_plan_or_the_run():
    """A new Layout field named as in ParallelPlan reaches the scalar estimate with no other edit;
    any other field must be one the run's training sets or an offload flag."""
    from_plan = {f.name for f in dataclasses.fields(Layout)} & set(ParallelPlan.model_fields)
    tr = TrainingSpec(samples=1e6, global_batch=64, image_size=224, patch_dropout=0.0)
    rest = {f.name for f in dataclasses.fields(Layout)} - from_plan - set(run_settings(tr))
    assert rest == {"nvme_optimizer", "nvme_param"}
    plan = ParallelPlan(**ONE_NODE, overlap_comm=False, gather_with_grad=False, quantized_gradients=True)
    lo = Layout.of(plan, tr)
    for name in from_plan - {"offload_optimizer", "offload_param", "precision"}:
        assert getattr(lo, name) == getattr(plan, name), name


def test_one_layout_of_arrays_equals_scalar_layouts():
    """A struct of arrays gives, element by element, what one Layout per plan gives."""
    m, hw = prof.load_model("eva02-clip-b16"), prof.load_hardware("h100-sxm")
    nodes, b, ckpt = np.array([1, 4]), np.array([8, 32]), np.array([False, True])
    tr = TrainingSpec(samples=1e6, global_batch=1024, image_size=224, patch_dropout=0.0)
    many = Layout(**run_settings(tr), nodes=nodes, zero_stage=2, micro_batch=b, grad_ckpt=ckpt)
    st = ev.step_terms(m, hw, many)
    for i in range(2):
        one = {"nodes": int(nodes[i]), "micro_batch": int(b[i]), "grad_ckpt": bool(ckpt[i])}
        plan = ParallelPlan(**{**ONE_NODE, **one, "zero_stage": 2, "gpus_per_node": hw.gpus_per_node})
        e = estimate(m, hw, plan, tr.model_copy(update={"global_batch": plan.global_batch}))
        assert e.compute.step_s == float(st["step_s"][i])
