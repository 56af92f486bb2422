"""Time the ZeRO-Offload / ZeRO-Infinity data movement adds to an optimizer step.

Array-friendly (floats or numpy arrays per candidate). Sources: ZeRO-Offload (arXiv 2101.06840 §4),
docs/planner-model.md ("5. Offload"): each step moves 2Ψ/N gradient bytes to the host and 2Ψ/N parameter
bytes back per GPU over PCIe while the host runs DeepSpeedCPUAdam on the node's Ψ/M parameters; the
two overlap, so the longer one counts. NVMe targets add reading and writing the 16 bytes/param of
optimizer state (fp32 master + moments + gradient) per step at the node's drive bandwidth. Parameter
offload moves each GPU's 2Ψ/N partition host→device for the forward and the backward gathers of
every micro-batch (and, on NVMe, reads it from the drives first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Num = Any


def offload_time_s(
    psi: Num,
    world: Num,
    nodes: Num,
    grad_accum: Num,
    offload_optimizer: Num,
    offload_param: Num,
    nvme_optimizer: Num,
    nvme_param: Num,
    pcie_gbps: float,
    cpu_adam_gparams_per_s: float,
    nvme_gbps: float,
) -> Num:
    pcie = pcie_gbps * 1e9
    nvme = nvme_gbps * 1e9
    oo = np.asarray(offload_optimizer, dtype=bool)
    op = np.asarray(offload_param, dtype=bool)
    opt = np.maximum(4.0 * psi / world / pcie, psi / nodes / (cpu_adam_gparams_per_s * 1e9))
    opt = opt + np.where(np.asarray(nvme_optimizer, dtype=bool), 2.0 * 16 * psi / nodes / nvme, 0.0)
    par = 2.0 * 2 * psi / world / pcie * grad_accum
    par = par + np.where(np.asarray(nvme_param, dtype=bool), 2.0 * 2 * psi / nodes / nvme * grad_accum, 0.0)
    return np.where(oo, opt, 0.0) + np.where(op, par, 0.0)
