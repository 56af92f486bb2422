"""benchmarks/deepspeed_host_cpu.py runs the real engine at ZeRO-0 and ZeRO-1 and reports what the planner's
DeepSpeed step term rests on: which optimizer DeepSpeed wrapped, the op count the planner charges, and the
host-device synchronisations per tensor (three at ZeRO-0: the overflow check's two `.item()` and one
`bool()`, none at ZeRO-1), besides the measured host time (machine-dependent: only checked positive)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from planner import ops

from .conftest import REPO

pytest.importorskip("deepspeed")

TENSORS = 24


@pytest.mark.train
def test_deepspeed_host_benchmark_runs_the_real_loops() -> None:
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "deepspeed_host_cpu.py"),
            "--tensors",
            str(TENSORS),
            "--steps",
            "3",
            "--stages",
            "0",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    z0, z1 = out["stages"]
    assert (z0["optimizer"], z1["optimizer"]) == ("FP16_UnfusedOptimizer", "DeepSpeedZeroOptimizer")
    assert z0["charged_ops_per_tensor"] == ops.DS_UNFUSED_OPS_PER_TENSOR
    assert z1["charged_ops_per_tensor"] == ops.DS_ZERO12_OPS_PER_PARTITION_TENSOR
    # Per tensor three at ZeRO-0 and none at ZeRO-1, besides a few per step (the overflow flag's and
    # the gradient norm's).
    per_step = [round(z["syncs_per_tensor"] * TENSORS) for z in (z0, z1)]
    assert 0 <= per_step[0] - 3 * TENSORS <= 8
    assert 0 <= per_step[1] <= 8
    assert z0["wrapper_us_per_tensor"] > 0 and z1["wrapper_us_per_tensor"] > 0
    assert out["op_us"] > 0
