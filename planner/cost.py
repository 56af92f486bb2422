"""Wall time, GPU-hours, dollars, storage, energy and CO2 of a training run.

Arithmetic on floats or numpy arrays (one value per candidate plan). Sources per constant below;
formulas in docs/planner-model.md ("6. Time and cost").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.terms import Term

Num = Any

HOURS_PER_MONTH = 730.0  # 8766 h / 12, the cloud billing month (AWS pricing pages)
# Unplanned interruptions of healthy on-demand hardware: Llama 3 (arXiv 2407.21783 §3.3.4) saw 419
# unexpected interruptions in 54 days on 16,384 H100 GPUs → one per 16384·54·24/419 ≈ 50,700
# GPU-hours, i.e. ≈ 6,340 hours per 8-GPU node. evaplan uses it for every GPU kind until calibrated.
NODE_MTBF_H_ON_DEMAND = 16384 * 54 * 24 / 419 / 8
# Bytes of a full training checkpoint per parameter: 16-bit params 2 + fp32 master 4 + two fp32
# optimizer moments 8. ZeRO (Rajbhandari et al., arXiv 1910.02054 §3.1, https://arxiv.org/abs/1910.02054)
# counts mixed-precision Adam as 2Ψ params + 2Ψ gradients + 12Ψ optimizer states = 16Ψ; a checkpoint
# does not save the gradients, so 14Ψ.
CHECKPOINT_BYTES_PER_PARAM = 14.0
GB = 1e9


def checkpoint_write_s(psi: Num, nodes: Num, nvme_write_gbps: float) -> Num:
    return checkpoint_write_term(psi, nodes, nvme_write_gbps).value


def checkpoint_write_term(psi: Num, nodes: Num, nvme_write_gbps: float) -> Term:
    """Each node writes its shard of the training state to local NVMe in parallel (upload to
    object storage continues in the background): 14Ψ / (nodes × NVMe write GB/s)."""
    return Term(
        "bytes_per_param * psi / (nodes * nvme_write_gbps * GB)",
        {
            "bytes_per_param": CHECKPOINT_BYTES_PER_PARAM,
            "psi": psi,
            "nodes": nodes,
            "nvme_write_gbps": nvme_write_gbps,
            "GB": GB,
        },
    )


def checkpoint_interval_term(
    write_s: Num, rate_per_s: Num, step_s: Num, checkpoint_every_s: Num | None
) -> Term:
    """The given interval, else Young/Daly's optimum √(2 · write · MTBF) (MTBF = 1 / rate); at least
    one step."""
    if checkpoint_every_s is None:
        return Term(
            "max(sqrt(2.0 * write_s / rate_per_s), step_s)",
            {"write_s": write_s, "rate_per_s": rate_per_s, "step_s": step_s},
        )
    return Term(
        "max(checkpoint_every_s, step_s)", {"checkpoint_every_s": checkpoint_every_s, "step_s": step_s}
    )


def interruption_rate_per_s(nodes: Num, spot_interruptions_per_node_month: Num) -> Num:
    """Cluster-wide interruption rate: hardware failures (Llama 3 MTBF) plus spot reclaims."""
    hw = nodes / (NODE_MTBF_H_ON_DEMAND * 3600.0)
    spot = nodes * spot_interruptions_per_node_month / (HOURS_PER_MONTH * 3600.0)
    return hw + spot


@dataclass(frozen=True)
class WallTime:
    steps: Num
    train_s: Num  # steps × step time
    checkpoint_interval_s: Num
    checkpoints: Num
    checkpoint_stall_s: Num  # training pauses while each checkpoint is written
    startup_s: Num
    expected_interruptions: Num
    rework_s: Num  # lost work + restarts
    wall_s: Num
    rate_per_s: Num = 0.0  # interruptions per second of the whole run (on-demand failures + spot)


def steps_term(samples: Num, global_batch: Num) -> Term:
    return Term("ceil(samples / B)", {"samples": samples, "B": global_batch})


def wall_term(
    startup_s: Num, train_s: Num, stalls_s: Num, rate_per_s: Num, tau_s: Num, restart_s: Num
) -> Term:
    """Each interruption loses half a checkpoint interval τ plus a restart; the lost share is capped
    at 0.9 (10× the failure-free time: beyond that the plan is hopeless, not infinite)."""
    return Term(
        "(startup_s + train_s + stalls_s) / (1.0 - min(rate_per_s * (tau_s / 2.0 + restart_s), 0.9))",
        {
            "startup_s": startup_s,
            "train_s": train_s,
            "stalls_s": stalls_s,
            "rate_per_s": rate_per_s,
            "tau_s": tau_s,
            "restart_s": restart_s,
        },
    )


def wall_time(
    *,
    samples: Num,
    global_batch: Num,
    step_s: Num,
    startup_s: Num,
    write_s: Num,
    rate_per_s: Num,
    restart_s: Num,
    checkpoint_every_s: Num | None = None,
) -> WallTime:
    """Wall time = start-up + steps × step + checkpoint stalls + expected rework.

    Each interruption loses on average half a checkpoint interval plus a restart; with W the wall
    time, interruptions = rate · W, so W = (start-up + train + stalls) / (1 − rate · (τ/2 + R)).
    """
    steps = steps_term(samples, global_batch).value
    train = steps * step_s
    tau = checkpoint_interval_term(write_s, rate_per_s, step_s, checkpoint_every_s).value
    checkpoints = np.floor(train / tau)
    stalls = checkpoints * write_s
    base = startup_s + train + stalls
    wall = wall_term(startup_s, train, stalls, rate_per_s, tau, restart_s).value
    interruptions = rate_per_s * wall
    return WallTime(
        steps, train, tau, checkpoints, stalls, startup_s, interruptions, wall - base, wall, rate_per_s
    )


@dataclass(frozen=True)
class Money:
    gpu_hours: Num
    node_hours: Num
    usd_per_node_hour: Num
    compute_usd: Num
    storage_usd: Num
    total_usd: Num


def money_term(node_hours: Num, usd_per_node_hour: Num, storage_usd: Num) -> Term:
    return Term(
        "node_hours * usd_per_node_hour + storage_usd",
        {"node_hours": node_hours, "usd_per_node_hour": usd_per_node_hour, "storage_usd": storage_usd},
    )


def money(nodes: Num, gpus_per_node: Num, wall_s: Num, usd_per_node_hour: Num, storage_usd: Num) -> Money:
    node_h = nodes * wall_s / 3600.0
    compute = node_h * usd_per_node_hour
    total = money_term(node_h, usd_per_node_hour, storage_usd).value
    return Money(node_h * gpus_per_node, node_h, usd_per_node_hour, compute, storage_usd, total)


def storage_usd(
    psi: Num, checkpoints_kept: Num, dataset_tb: Num, wall_s: Num, usd_per_gb_month: float
) -> Num:
    """Checkpoints kept (14 bytes/param each) plus the dataset, held in object storage for the run."""
    months = wall_s / (HOURS_PER_MONTH * 3600.0)
    gb = checkpoints_kept * CHECKPOINT_BYTES_PER_PARAM * psi / GB + dataset_tb * 1000.0
    return gb * usd_per_gb_month * months


@dataclass(frozen=True)
class Energy:
    kwh: Num
    co2_kg: Num


def energy(nodes: Num, node_power_kw: float, wall_s: Num, pue: float, grid_gco2_per_kwh: float) -> Energy:
    """kWh = nodes × node kW (at full load, host included) × hours × PUE; CO2 = kWh × grid intensity."""
    kwh = energy_kwh_term(nodes, node_power_kw, wall_s, pue).value
    return Energy(kwh, co2_kg_term(kwh, grid_gco2_per_kwh).value)


def energy_kwh_term(nodes: Num, node_power_kw: float, wall_s: Num, pue: float) -> Term:
    return Term(
        "nodes * node_power_kw * wall_s / 3600.0 * pue",
        {"nodes": nodes, "node_power_kw": node_power_kw, "wall_s": wall_s, "pue": pue},
    )


def co2_kg_term(kwh: Num, grid_gco2_per_kwh: float) -> Term:
    return Term("kwh * grid_gco2_per_kwh / 1000.0", {"kwh": kwh, "grid_gco2_per_kwh": grid_gco2_per_kwh})
