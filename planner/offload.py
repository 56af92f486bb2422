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

from planner.terms import Term

Num = Any


# The optimizer step offloaded: the longer of the gradient + parameter traffic over PCIe (4 bytes
# per parameter of the GPU's partition) and the CPU Adam of the node's parameters, + on NVMe the
# optimizer states' read and write (2 × 16 bytes per parameter of the node) at the drives' rate.
_OPTIMIZER = (
    "max(4.0 * psi / N / (pcie_gbps * 1e9), psi / M / (cpu_adam_gparams_per_s * 1e9))"
    " + where(nvme_optimizer, 2.0 * 16 * psi / M / (nvme_gbps * 1e9), 0.0)"
)
# Parameters offloaded: the GPU's 16-bit partition host→device for the forward and the backward
# gathers of every micro-batch, + on NVMe the node's partition read from the drives first.
_PARAMS = (
    "2.0 * 2 * psi / N / (pcie_gbps * 1e9) * gas"
    " + where(nvme_param, 2.0 * 2 * psi / M / (nvme_gbps * 1e9) * gas, 0.0)"
)


def offload_term(
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
) -> Term:
    """Seconds per optimizer step that offloading adds (offload and NVMe flags 1/0)."""

    def flag(x: Num) -> Num:
        return np.asarray(x, dtype=bool)

    return Term(
        f"where(offload_optimizer, {_OPTIMIZER}, 0.0) + where(offload_param, {_PARAMS}, 0.0)",
        {
            "offload_optimizer": flag(offload_optimizer),
            "offload_param": flag(offload_param),
            "nvme_optimizer": flag(nvme_optimizer),
            "nvme_param": flag(nvme_param),
            "psi": psi,
            "N": world,
            "M": nodes,
            "gas": grad_accum,
            "pcie_gbps": pcie_gbps,
            "cpu_adam_gparams_per_s": cpu_adam_gparams_per_s,
            "nvme_gbps": nvme_gbps,
        },
        "ZeRO-Offload arXiv 2101.06840; docs/planner-model.md §5 (Offload)",
    )
