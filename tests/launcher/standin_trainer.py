"""A stand-in for `python -m evaclip.train` with the same contract (flags, metrics JSON lines,
checkpoint on SIGTERM, resume), but no torch: it tests the local backend's process handling,
logs and stop/resume quickly. The real trainer runs in test_local_backend.py's end-to-end test."""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--ds-config", required=True)
ap.add_argument("--run-config", required=True)
args = ap.parse_args()
rc = json.loads(Path(args.run_config).read_text())
ds = json.loads(Path(args.ds_config).read_text())
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
ckpt = Path(rc["checkpoint"]["dir"]) / "latest.json"
metrics = Path(rc["output_dir"]) / rc["metrics_file"]
metrics.parent.mkdir(parents=True, exist_ok=True)
step = json.loads(ckpt.read_text())["step"] if rc["checkpoint"]["resume"] and ckpt.is_file() else 0
print(f"rank {rank}/{world} starting at step {step}", flush=True)
for shown in filter(None, os.environ.get("STANDIN_SHOW_ENV", "").split(",")):  # what the rank got
    print(f"rank {rank} env {shown}={os.environ.get(shown)}", flush=True)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
if os.environ.get("STANDIN_IGNORE_TERM"):  # a trainer hung in a collective: only SIGKILL ends it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
batch = ds["train_batch_size"]
# Test knobs (environment): STANDIN_FAIL="<rank>:<step>:<exit code>" makes that rank print a last
# line and exit with that code at that step; STANDIN_BUILD_DIR makes rank 0 run a child in that
# folder (holding a build.ninja and torch's `lock`, as while DeepSpeed builds an op) until a file
# named `release` appears there; a build stopped before that leaves the lock, as a real one does.
fail = os.environ.get("STANDIN_FAIL")
fail_rank, fail_step, fail_code = (int(x) for x in fail.split(":")) if fail else (-1, -1, 0)
build_dir = os.environ.get("STANDIN_BUILD_DIR")
if build_dir and rank == 0:
    import subprocess

    Path(build_dir).mkdir(parents=True, exist_ok=True)
    (Path(build_dir) / "build.ninja").write_text("# stand-in\n")
    (Path(build_dir) / "lock").write_text("")  # torch's FileBaton, held for the build
    waiter = "import os, time\nwhile not os.path.exists('release'): time.sleep(0.1)\n"
    subprocess.run([sys.executable, "-c", waiter], cwd=build_dir, check=True)
    (Path(build_dir) / "lock").unlink()  # released only when the build ends well
while step < rc["total_steps"] and not stop:
    time.sleep(0.2)
    step += 1
    print(f"rank {rank} step {step}", flush=True)
    if rank == fail_rank and step == fail_step:
        print(f"rank {rank} fails on purpose at step {step}", flush=True)
        sys.exit(fail_code)
    if rank == 0:
        with open(metrics, "a") as f:
            f.write(
                json.dumps(
                    {
                        "step": step,
                        "samples_seen": step * batch,
                        "samples_per_s": batch / 0.2,
                        "step_time_s": 0.2,
                        "loss": 1.0 / step,
                        "world_size": world,
                    }
                )
                + "\n"
            )
if stop and rank == 0:
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_text(json.dumps({"step": step}))
    print(f"rank 0 checkpointed step {step} on SIGTERM", flush=True)
sys.exit(0)
