"""How fast `evaplan estimate` answers, measured side by side with DeepSpeed's own memory estimator
on the same model in the same run (whole process: spawn to exit).

    .venv/bin/python benchmarks/estimate_speed.py [--repeat 5]

Prints the median wall time of each over the repeats (interleaved, so both see the same machine
load) and their ratio, for EVA-CLIP-18B on 256 H100s priced on AWS p5 (the `make estimate`
request); plus, in-process, the import and the choose + estimate times. Done-when target (issue 14):
evaplan whole-process ≥ 10× faster than DeepSpeed's estimator script.

Also timed in the same interleaved loop: the import floor of the packages the command is built on, a
process that imports click and numpy and defines one pydantic model and does nothing else. No
`evaplan estimate` on this stack can start faster than that, so DeepSpeed's time over the floor is the
best ratio reachable without replacing click, pydantic (profile validation) or numpy (the vectorised
search that fills unset settings).

DeepSpeed's estimator is `estimate_zero3_model_states_mem_needs_all_cold` (the function DeepSpeed's
documentation gives for sizing ZeRO-3 memory before a run), called with the same parameter count,
largest layer and cluster, in a fresh `python -c` process as a user would run it.

The untimed first run of each writes Python's bytecode cache (__pycache__), as an installed package
has it, even where PYTHONDONTWRITEBYTECODE is set: without it every run would recompile evaplan's
own modules from source (tens of milliseconds here) and time the compiler rather than the command.
"""

from __future__ import annotations

import argparse
import os
import resource
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
    "--offering",
    "aws-p5",
    "--gpus",
    "256",
]


def deepspeed_script(total: int, largest: int, gpus_per_node: int, nodes: int) -> str:
    return (
        "from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold as e; "
        f"e(total_params={total}, largest_layer_params={largest}, num_gpus_per_node={gpus_per_node}, "
        f"num_nodes={nodes})"
    )


# The stack's import floor: click (the CLI), numpy (the search), one pydantic model (the profiles).
FLOOR_SCRIPT = (
    "import click, numpy\nfrom pydantic import BaseModel\nclass Floor(BaseModel):\n    x: int = 1\n"
)

CPU_S: dict[str, list[float]] = {}


def timed(cmd: list[str], label: str = "", env: dict[str, str] | None = None) -> float:
    """Wall seconds of one run; its CPU seconds (user + system, less sensitive to other load on the
    machine) are kept in CPU_S[label]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU_S.setdefault(label, []).append(cpu)
    return wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    exe = shutil.which("evaplan", path=str(Path(sys.executable).parent)) or shutil.which("evaplan")
    cmd = [exe, *ARGS] if exe else [sys.executable, "-m", "launcher.cli", *ARGS]
    # Warm the file cache before timing, and write the bytecode cache (see the docstring) that the
    # in-process import below reads too.
    writes_bytecode = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    timed(cmd, env=writes_bytecode)

    t0 = time.perf_counter()
    from planner import profiles as prof
    from planner.calibration import calibrated_hardware
    from planner.choose import Request, choose
    from planner.params import count_params

    # The hardware as the command sees it (the published-runs compute scale, or a user calibration),
    # so that the in-process result below is the command's.
    model, hw, off = (
        prof.load_model("eva-clip-18b"),
        calibrated_hardware(prof.load_hardware("h100-sxm")).hardware,
        prof.load_offering("aws-p5"),
    )
    first = time.perf_counter() - t0
    counts = count_params(model)
    ds_cmd = [sys.executable, "-c", deepspeed_script(counts.total, counts.largest_layer, 8, 32)]
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        ds_cmd = []

    if ds_cmd:
        timed(ds_cmd, env=writes_bytecode)
    floor_cmd = [sys.executable, "-c", FLOOR_SCRIPT]
    timed(floor_cmd, env=writes_bytecode)
    ours, theirs, floor = [], [], []
    for _ in range(a.repeat):  # interleaved: all see the same load
        ours.append(timed(cmd, "evaplan"))
        floor.append(timed(floor_cmd, "floor"))
        if ds_cmd:
            theirs.append(timed(ds_cmd, "deepspeed"))
    runs = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        est = choose(model, hw, Request(gpus=256), off)
        runs.append(time.perf_counter() - t0)

    m_ours = statistics.median(ours)
    print(f"command: evaplan {' '.join(ARGS)}")
    print(f"evaplan estimate, whole process (median of {a.repeat}): {m_ours * 1e3:.0f} ms")
    if theirs:
        m_ds = statistics.median(theirs)
        print(
            f"DeepSpeed estimate_zero3_model_states_mem_needs_all_cold, whole process (median of {a.repeat}): "
            f"{m_ds * 1e3:.0f} ms"
        )
        print(f"ratio: evaplan is {m_ds / m_ours:.1f}x faster (target >= 10x)")
        m_floor = statistics.median(floor)
        print(
            f"import floor of click + numpy + one pydantic model, whole process (median of {a.repeat}): "
            f"{m_floor * 1e3:.0f} ms; best ratio reachable on this stack: {m_ds / m_floor:.1f}x"
        )
        c_ours, c_ds = statistics.median(CPU_S["evaplan"]), statistics.median(CPU_S["deepspeed"])
        print(
            f"CPU time (user + system, median): evaplan {c_ours * 1e3:.0f} ms, DeepSpeed {c_ds * 1e3:.0f} ms: "
            f"{c_ds / c_ours:.1f}x; the import floor {statistics.median(CPU_S['floor']) * 1e3:.0f} ms: "
            f"{c_ds / statistics.median(CPU_S['floor']):.1f}x at best"
        )
    else:
        print("DeepSpeed is not installed here (make dev installs it): no side-by-side figure")
    print(f"in-process import + profile load: {first * 1e3:.0f} ms")
    print(f"in-process choose + estimate (median of {a.repeat}): {statistics.median(runs) * 1e3:.1f} ms")
    print(f"result: {est.verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
