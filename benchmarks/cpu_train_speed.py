"""Training speed of the bundled trainer on CPU: eva-clip-debug, one process, ZeRO stage as asked.

    python benchmarks/cpu_train_speed.py [--steps 20] [--repo PATH] [--zero-stage 0]

Runs `python -m evaclip.train` from `--repo` (default: this checkout; point it at an export of
another commit to compare before/after on the same machine) and prints the rate of optimizer
steps after the first 5 (warm-up: allocator, first-call overheads), from the wall time between
step records, as steps/s and samples/s, with the median step. A CPU figure guards against
regressions in the Python side of the step; it says nothing about GPU speed
(benchmarks/gpu_check.py). On a shared machine, alternate the two checkouts several times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--zero-stage", type=int, default=0, choices=(0, 1, 2, 3))
    p.add_argument("--repo", type=Path, default=HERE, help="checkout whose evaclip/planner to run")
    a = p.parse_args()
    if a.steps <= WARMUP_STEPS:
        p.error(f"--steps must exceed the {WARMUP_STEPS} warm-up steps")
    repo = a.repo.resolve()
    sys.path.insert(0, str(repo))
    from planner.deepspeed_config import deepspeed_config
    from planner.profiles import load_model
    from planner.spec import ParallelPlan

    plan = ParallelPlan(
        nodes=1,
        gpus_per_node=1,
        zero_stage=a.zero_stage,
        micro_batch=a.micro_batch,
        grad_accum=1,
        grad_ckpt=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run = {
            "job_name": "cpu-speed",
            "model": load_model("eva-clip-debug").model_dump(mode="json"),
            "total_steps": a.steps,
            "image_size": 32,
            "patch_dropout": 0.0,
            "image_lr": 3e-4,
            "text_lr": 3e-4,
            "output_dir": str(out),
            "checkpoint": {"dir": str(out / "ckpt"), "resume": False},
        }
        (out / "ds.json").write_text(json.dumps(deepspeed_config(plan, grad_clip=5.0)))
        (out / "run.json").write_text(json.dumps(run))
        env = {
            **os.environ,
            "PYTHONPATH": str(repo),
            "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        cmd = [sys.executable, "-m", "evaclip.train", "--ds-config", str(out / "ds.json")]
        proc = subprocess.run(
            [*cmd, "--run-config", str(out / "run.json")], cwd=repo, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            print(proc.stdout[-2000:] + proc.stderr[-2000:], file=sys.stderr)
            return 1
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
        steps = [r for r in records if r.get("event") == "step"]
    # Wall time between step records (`time_s`, seconds since training began, written by every
    # trainer version): the whole loop, records and all, so two versions compare like for like
    # even if they define `step_time_s` differently.
    t = {s["step"]: s["time_s"] for s in steps}
    intervals = [t[i] - t[i - 1] for i in range(WARMUP_STEPS + 1, a.steps + 1)]
    med = statistics.median(intervals)
    rate = len(intervals) / (t[a.steps] - t[WARMUP_STEPS])
    print(f"repo {repo}  model eva-clip-debug  micro-batch {a.micro_batch}  ZeRO-{a.zero_stage}")
    print(
        f"steps {WARMUP_STEPS + 1}-{a.steps}: {rate:.2f} steps/s ({rate * a.micro_batch:.1f} samples/s) "
        f"over {t[a.steps] - t[WARMUP_STEPS]:.2f} s; median step {med * 1e3:.1f} ms "
        f"(min {min(intervals) * 1e3:.1f}, max {max(intervals) * 1e3:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
