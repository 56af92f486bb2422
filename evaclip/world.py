"""The environment a process needs to be a distributed world of one (what torchrun would set)."""

from __future__ import annotations

import os
import socket


def single_process_env() -> dict[str, str]:
    """RANK, WORLD_SIZE and friends for a world of one, on a free port of 127.0.0.1: for
    `python -m evaclip.train` without a launcher, and for one-process runs of the real DeepSpeed engine
    (the op census, benchmarks/deepspeed_host_cpu.py, benchmarks/gpu_check.py)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return dict(
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        LOCAL_WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


def ensure_single_process_env() -> None:
    """A process not started by a launcher (no RANK) becomes its own world of one; under torchrun or
    Slurm, what the launcher set stays."""
    if "RANK" in os.environ:
        return
    os.environ.update(single_process_env())
