"""Wall time, checkpointing, dollars, energy: hand arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.cost import (
    NODE_MTBF_H_ON_DEMAND,
    checkpoint_interval_term,
    checkpoint_write_s,
    energy,
    interruption_rate_per_s,
    money,
    storage_usd,
    wall_time,
)


def test_checkpoint_and_young_daly():
    # 18.3e9 params × 14 B over 32 nodes × 34 GB/s
    assert checkpoint_write_s(18.3e9, 32, 34.0) == pytest.approx(18.3e9 * 14 / (32 * 34e9))
    # Young/Daly √(2 · write · MTBF) when no interval is given; at least one step; a given one kept.
    assert checkpoint_interval_term(60.0, 1 / 86400, 1.0, None).value == pytest.approx(
        math.sqrt(2 * 60 * 86400)
    )
    assert checkpoint_interval_term(60.0, 1 / 86400, 1e6, None).value == 1e6
    assert checkpoint_interval_term(60.0, 1 / 86400, 1.0, 600.0).value == 600.0
    # Llama 3: 419 interruptions / (16384 GPUs × 54 days) → per 8-GPU node ≈ 6,335 h MTBF (16384·54·24 / 419 / 8 = 6,334.6).
    assert NODE_MTBF_H_ON_DEMAND == pytest.approx(6334.6, rel=1e-4)
    # spot: 0.075 interruptions per node-month on 10 nodes adds 0.75 / 730 h.
    r = interruption_rate_per_s(10, 0.075)
    assert r == pytest.approx(10 / (NODE_MTBF_H_ON_DEMAND * 3600) + 0.75 / (730 * 3600))


def test_wall_time_with_rework():
    w = wall_time(
        samples=1000,
        global_batch=100,
        step_s=36.0,
        startup_s=100.0,
        write_s=10.0,
        rate_per_s=1e-5,
        restart_s=600.0,
        checkpoint_every_s=120.0,
    )
    assert float(w.steps) == 10 and float(w.train_s) == 360.0
    assert float(w.checkpoints) == 3 and float(w.checkpoint_stall_s) == 30.0
    base = 100 + 360 + 30
    wall = base / (1 - 1e-5 * (60 + 600))
    assert float(w.wall_s) == pytest.approx(wall)
    assert float(w.expected_interruptions) == pytest.approx(1e-5 * wall)
    # vectorised over candidates, element-wise equal to the scalar call
    ws = wall_time(
        samples=1000,
        global_batch=np.array([100, 50]),
        step_s=np.array([36.0, 20.0]),
        startup_s=100.0,
        write_s=10.0,
        rate_per_s=1e-5,
        restart_s=600.0,
    )
    w1 = wall_time(
        samples=1000,
        global_batch=50,
        step_s=20.0,
        startup_s=100.0,
        write_s=10.0,
        rate_per_s=1e-5,
        restart_s=600.0,
    )
    assert float(ws.wall_s[1]) == float(w1.wall_s)


def test_money_storage_energy():
    mo = money(nodes=32, gpus_per_node=8, wall_s=36000.0, usd_per_node_hour=55.04, storage_usd=10.0)
    assert float(mo.node_hours) == 320.0 and float(mo.gpu_hours) == 2560.0
    assert float(mo.total_usd) == pytest.approx(320 * 55.04 + 10)
    # 3 checkpoints × 14 B × 1e9 params = 42 GB + 1 TB data, for one 730-h month at $0.023
    assert float(storage_usd(1e9, 3, 1.0, 730 * 3600.0, 0.023)) == pytest.approx((42 + 1000) * 0.023)
    en = energy(nodes=2, node_power_kw=10.2, wall_s=7200.0, pue=1.12, grid_gco2_per_kwh=370)
    assert float(en.kwh) == pytest.approx(2 * 10.2 * 2 * 1.12)
    assert float(en.co2_kg) == pytest.approx(2 * 10.2 * 2 * 1.12 * 0.370)


def test_offload_time_by_hand():
    from planner.offload import offload_term

    # Ψ = 1e9 on 8 GPUs of one node: PCIe 4Ψ/N / 50 GB/s = 0.01 s < CPU Adam Ψ/M / 2e9 params/s = 0.5 s.
    t = offload_term(1e9, 8, 1, 2, True, False, False, False, 50.0, 2.0, 34.0).value
    assert float(t) == pytest.approx(0.5)
    # NVMe optimizer: + read and write 16Ψ/M at 34 GB/s; parameter offload: 2 × 2Ψ/N per micro-batch × gas 2.
    t = offload_term(1e9, 8, 1, 2, True, True, True, False, 50.0, 2.0, 34.0).value
    assert float(t) == pytest.approx(0.5 + 2 * 16e9 / 34e9 + 2 * 2e9 / 8 / 50e9 * 2)
    assert float(offload_term(1e9, 8, 1, 2, False, False, False, False, 50.0, 2.0, 34.0).value) == 0.0
