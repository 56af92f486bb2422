"""The candidate grid: only combinations DeepSpeed accepts, and the global batch is reached."""

from __future__ import annotations

import numpy as np
import pytest

from planner.errors import InfeasibleError
from planner.grid import SearchSpace, build_grid, settings_combos, shapes_for
from planner.spec import ParallelPlan


def test_every_combo_is_a_valid_parallel_plan() -> None:
    devices = ("none", "cpu", "nvme")
    combos = settings_combos(SearchSpace(), 8)
    assert (
        len(combos) == 23
    )  # stage 0: 1, stages 1/2: 2 each, stage 3: 3×3 offload + 3 offload_opt × hpZ {2,4,8}
    for stage, oo, op, hpz in combos:
        ParallelPlan(
            nodes=1,
            gpus_per_node=8,
            zero_stage=int(stage),
            offload_optimizer=devices[oo],
            offload_param=devices[op],
            micro_batch=1,
            grad_accum=1,
            grad_ckpt=False,
            hpz_partition_size=int(hpz),
        )


def test_exact_batch_uses_divisors_and_tolerance_adds_ladder() -> None:
    assert shapes_for(1024, 64, 0.0, None) == [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)]
    assert shapes_for(1000, 64, 0.0, None) == []
    near = shapes_for(108000, 256, 0.02, None)
    assert all(abs(b * g * 256 - 108000) <= 0.02 * 108000 for b, g in near)
    assert (32, 13) in near


def test_grid_reaches_global_batch_and_is_stage_major() -> None:
    g = build_grid(SearchSpace(max_nodes=16), 8, 32768, 0.0)
    assert np.all(g.global_batch == 32768)
    assert np.all(np.diff(g.zero_stage) >= 0)
    assert sorted(set(g.nodes.tolist())) == [1, 2, 4, 8, 16]


def test_unreachable_batch_is_one_line_error() -> None:
    with pytest.raises(InfeasibleError, match="reaches the global batch 1,001"):
        build_grid(SearchSpace(max_nodes=4), 8, 1001, 0.0)
