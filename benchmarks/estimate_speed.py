"""How fast `evaplan estimate` answers: start-up (process spawn to exit) and in-process run time.

    .venv/bin/python benchmarks/estimate_speed.py [--repeat 5]

Prints the median of each over the repeats, for EVA-CLIP-18B on 256 H100s priced on AWS p5 (the
`make estimate` request). Done-when target (issue 3): well under a second.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARGS = [
    "estimate",
    "--model",
    "eva-clip-18b",
    "--hardware",
    "h100-sxm",
    "--gpus",
    "256",
    "--offering",
    "aws-p5",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    exe = shutil.which("evaplan", path=str(Path(sys.executable).parent)) or shutil.which("evaplan")
    cmd = [exe, *ARGS] if exe else [sys.executable, "-m", "launcher.cli", *ARGS]

    spawn = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        spawn.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    from planner import profiles as prof
    from planner.choose import Request, choose

    model, hw, off = (
        prof.load_model("eva-clip-18b"),
        prof.load_hardware("h100-sxm"),
        prof.load_offering("aws-p5"),
    )
    first = time.perf_counter() - t0
    runs = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        est = choose(model, hw, Request(gpus=256), off)
        runs.append(time.perf_counter() - t0)

    print(f"command: evaplan {' '.join(ARGS)}")
    print(f"start-up (spawn to exit, median of {a.repeat}): {statistics.median(spawn) * 1e3:.0f} ms")
    print(f"in-process import + profile load: {first * 1e3:.0f} ms")
    print(f"in-process choose + estimate (median of {a.repeat}): {statistics.median(runs) * 1e3:.1f} ms")
    print(f"result: {est.verdict}; step {est.compute.step_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
