"""DeepSpeed's comms logger vs planner.comm: bytes per optimizer step per collective, measured on a
2-rank CPU run (torchrun + gloo, eva-clip-debug) for ZeRO 0–3 × gradient accumulation 1 and 4.

    python benchmarks/comm_check.py [--stages 0,1,2,3] [--grad-accum 1,4] [--steps 4]

Each cell runs the real trainer (`-m evaclip.train`) with `comms_logger` on, reads the per-step
`comm_bytes` it records (deepspeed.comm calls on rank 0), and prints them next to the planner's
`logged_bytes` (the comms logger's convention: all_gather_into_tensor logs the per-rank input, the
others the whole buffer). Steady state: the first step (the first two under ZeRO-3, which traces the
module order, then broadcasts once) is left out. Scalar bookkeeping all-reduces (gradient norm,
overflow flags: < 1 KiB a step) are shown but not compared. Exit code 1 if any cell is off by > 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DS_NAMES = {
    "all_reduce": "all_reduce",
    "all_gather": "all_gather_into_tensor",
    "reduce_scatter": "reduce_scatter_tensor",
    "all_to_all": "all_to_all_single",
}
BOOKKEEPING_BYTES = 1024
TOLERANCE = 0.05


def predicted_logged_bytes(model, plan) -> dict[str, float]:
    from planner.comm import collective_bytes

    out: dict[str, float] = {}
    for c in collective_bytes(model, plan):
        if c.ds_logged and float(c.logged_bytes) > 0:
            out[DS_NAMES[c.op]] = out.get(DS_NAMES[c.op], 0.0) + float(c.logged_bytes)
    return out


def run_cell(stage: int, gas: int, steps: int, work: Path) -> tuple[list[dict], str]:
    from evaclip.config import RunConfig
    from evaclip.metrics import read_metrics
    from planner.deepspeed_config import deepspeed_config
    from planner.profiles import load_model
    from planner.spec import ParallelPlan

    model = load_model("eva-clip-debug")
    plan = ParallelPlan(
        nodes=1, gpus_per_node=2, zero_stage=stage, micro_batch=4, grad_accum=gas, grad_ckpt=False
    )
    run = RunConfig(
        job_name="comm-check",
        model=model,
        total_steps=steps,
        image_size=model.vision.image_size,
        patch_dropout=0.0,
        image_lr=3e-4,
        text_lr=3e-4,
        output_dir=str(work / "out"),
        checkpoint={"resume": False, "dir": str(work / "ckpt")},
    )
    (work / "ds.json").write_text(json.dumps(deepspeed_config(plan, grad_clip=5.0, comms_logger=True)))
    (work / "run.json").write_text(run.model_dump_json())
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONWARNINGS": "ignore::FutureWarning",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "evaclip.train",
            "--ds-config",
            str(work / "ds.json"),
            "--run-config",
            str(work / "run.json"),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ZeRO-{stage} gas {gas} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    steps_recs = [r for r in read_metrics(work / "out" / "metrics.jsonl") if r["event"] == "step"]
    return steps_recs, str(plan.model_dump())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", default="0,1,2,3")
    p.add_argument("--grad-accum", default="1,4")
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args(argv)

    from planner.profiles import load_model
    from planner.spec import ParallelPlan

    model = load_model("eva-clip-debug")
    rows = []
    bad = 0
    with tempfile.TemporaryDirectory(prefix="comm_check_") as tmp:
        for stage in map(int, args.stages.split(",")):
            for gas in map(int, args.grad_accum.split(",")):
                work = Path(tmp) / f"z{stage}g{gas}"
                work.mkdir()
                recs, _ = run_cell(stage, gas, args.steps, work)
                skip = 2 if stage == 3 else 1
                steady = recs[skip:]
                plan = ParallelPlan(
                    nodes=1, gpus_per_node=2, zero_stage=stage, micro_batch=4, grad_accum=gas, grad_ckpt=False
                )
                pred = predicted_logged_bytes(model, plan)
                names = sorted(set(pred) | {k for r in steady for k in r["comm_bytes"]})
                for name in names:
                    measured = [r["comm_bytes"].get(name, 0) for r in steady]
                    m = sum(measured) / len(measured)
                    pv = pred.get(name, 0.0)
                    compared = max(m, pv) >= BOOKKEEPING_BYTES
                    err = abs(m - pv) / max(m, pv) if max(m, pv) else 0.0
                    ok = (not compared) or err <= TOLERANCE
                    bad += not ok
                    rows.append((stage, gas, name, m, pv, err, "ok" if ok else "OFF", compared))
                    print(
                        f"ZeRO-{stage} gas {gas} {name:24} measured {m:12.0f} B/step  planner {pv:12.0f} B/step  "
                        f"{'' if compared else '(bookkeeping, not compared) '}{'ok' if ok else 'OFF'}",
                        flush=True,
                    )
    print("\nstage gas collective                 measured B/step   planner B/step   error")
    for stage, gas, name, m, pv, err, verdict, compared in rows:
        print(
            f"{stage:>5} {gas:>3} {name:24} {m:16.0f} {pv:16.0f} {err * 100:6.2f}% {verdict}{'' if compared else ' (bookkeeping)'}"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
