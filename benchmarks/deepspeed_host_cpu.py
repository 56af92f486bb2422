"""Host time of DeepSpeed's per-tensor step loops on this CPU, beside what the planner charges for them.

    .venv/bin/python benchmarks/deepspeed_host_cpu.py [--tensors 400] [--steps 30] [--stages 0 1 2] [--json]

The planner prices the loops DeepSpeed runs tensor by tensor around the optimizer (planner/ops.py
deepspeed_wrapper_term) as ATen ops × HOST_S_PER_TORCH_CALL, 7 µs: the public figure for one small op
with autograd recording on a CUDA host. This measures the same loops on the real engine: one process,
bf16, gradient clipping at 5 (planner.deepspeed_config), a module of `--tensors` parameters of 16
elements each, so the step's kernels cost next to nothing and what is left is host time. The wrapper is
the median `engine.step()` time minus the client optimizer's own `step()` inside it (timed by wrapping
it), per parameter tensor of the rank's partition (a world of one: every tensor).

A CPU has no kernel launch, and its speed is not a GPU host's, so the figures are given twice: in µs,
and in units of this CPU's time for `2 * x` on a 4-element tensor with autograd recording (the op the
7 µs was measured on). `charged` is the planner's op count per tensor, in the same units. On a GPU the
loops also pay a launch per kernel and, at ZeRO-0, three host-device synchronisations per tensor (two
`.item()` and one `bool()` of the overflow check, counted below), which this CPU run cannot show.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaclip.op_census import counting_calls
from evaclip.world import ensure_single_process_env
from launcher.measure_cpu import cpu_model
from planner import ops

# Synchronising calls: each waits for the device on a GPU.
SYNC_CALLS = ("item", "__bool__", "__float__", "__int__", "tolist")


def op_time_s(repeat: int = 20000) -> float:
    """This CPU's time for `2 * x` with autograd recording (pytorch/pytorch issue #41383's op)."""
    import torch

    y = torch.ones(4, requires_grad=True)
    for _ in range(1000):
        2 * y
    t0 = time.perf_counter()
    for _ in range(repeat):
        2 * y
    return (time.perf_counter() - t0) / repeat


def measure_stage(zero_stage: int, tensors: int, steps: int) -> dict[str, Any]:
    import deepspeed
    import torch

    from planner.deepspeed_config import deepspeed_config
    from planner.spec import ParallelPlan

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ps = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(16)) for _ in range(tensors))

        def forward(self, x: Any) -> Any:
            return sum((p * x).sum() for p in self.ps)

    torch.manual_seed(0)
    model = Tiny()
    plan = ParallelPlan(
        nodes=1, gpus_per_node=1, zero_stage=zero_stage, micro_batch=1, grad_accum=1, grad_ckpt=False
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=opt, config=deepspeed_config(plan, grad_clip=5.0)
    )
    x = torch.ones(16, dtype=torch.bfloat16)
    inner = [0.0]
    own_step = opt.step

    def timed_step(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = own_step(*args, **kwargs)
        inner[0] += time.perf_counter() - t0
        return out

    opt.step = timed_step  # type: ignore[method-assign]

    calls, counts = counting_calls()

    wall, own = [], []
    for i in range(steps + 3):  # 3 warm-up steps: the first builds the optimizer states
        engine.backward(engine(x))
        inner[0] = 0.0
        if i == steps + 2:
            with calls:
                engine.step()
            continue
        t0 = time.perf_counter()
        engine.step()
        if i >= 2:
            wall.append(time.perf_counter() - t0)
            own.append(inner[0])
    per_tensor_s = (statistics.median(wall) - statistics.median(own)) / tensors
    return {
        "zero_stage": zero_stage,
        "optimizer": type(engine.optimizer).__name__,
        "wrapper_us_per_tensor": per_tensor_s * 1e6,
        "syncs_per_tensor": sum(counts[k] for k in SYNC_CALLS) / tensors,
        "charged_ops_per_tensor": ops.DS_UNFUSED_OPS_PER_TENSOR
        if zero_stage == 0
        else ops.DS_ZERO12_OPS_PER_PARTITION_TENSOR,
        "_per_tensor_s": per_tensor_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=400, help="parameter tensors (EVA02-B/16 has 410)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per stage (the median is taken)")
    ap.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2])
    ap.add_argument("--json", action="store_true", help="end with one JSON line instead of a table")
    a = ap.parse_args(argv)
    if a.tensors < 1 or a.steps < 1:
        ap.error("--tensors and --steps must be at least 1")
    ensure_single_process_env()
    import torch

    unit = op_time_s()
    rows = []
    for stage in a.stages:
        print(f"ZeRO-{stage}: {a.steps} steps over {a.tensors} tensors ...", file=sys.stderr, flush=True)
        r = measure_stage(stage, a.tensors, a.steps)
        r["wrapper_ops_equivalent"] = r.pop("_per_tensor_s") / unit
        rows.append(r)
    out = {
        "date": date.today().isoformat(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "op_us": unit * 1e6,
        "host_us_per_op_charged": ops.HOST_S_PER_TORCH_CALL * 1e6,
        "stages": rows,
    }
    if a.json:
        print(json.dumps(out))  # one line, the last: DeepSpeed's own log lines go to stdout too
        return 0
    print(f"{out['cpu']}, torch {out['torch']}, {out['date']}: 2 * x with autograd {out['op_us']:.2f} µs")
    print("stage   optimizer               measured µs/tensor   in 2*x ops   charged ops   syncs/tensor")
    for r in rows:
        print(
            f"ZeRO-{r['zero_stage']}  {r['optimizer']:<22}  {r['wrapper_us_per_tensor']:>18.1f}"
            f"   {r['wrapper_ops_equivalent']:>10.1f}   {r['charged_ops_per_tensor']:>11.0f}"
            f"   {r['syncs_per_tensor']:>12.1f}"
        )
    print(
        f"the planner charges {out['host_us_per_op_charged']:.0f} µs per charged op on a GPU host "
        "(planner/ops.py HOST_S_PER_TORCH_CALL), plus the ops' bytes at ZeRO-0"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
