"""How fast and how heavy `evaplan plan` / `compare` are over the whole offering catalog (issue 23),
whole process (spawn to exit), with DeepSpeed's own estimator script timed in the same run.

    .venv/bin/python benchmarks/catalog_speed.py [--repeat 5] [--table-repeat 3] [--checkout DIR]
    .venv/bin/python benchmarks/catalog_speed.py --checkout ../main --table-repeat 0   # before, same machine

Targets (issue 23, the shared 2-core machine): EVA-CLIP-18B with a 30-day deadline over every offering
≤ 1.0 s and ≤ 300 MB peak RSS; one offering ≤ 0.4 s; `compare` over every offering ≤ 1.0 s. Each
figure is the median of --repeat runs, interleaved with the yardstick (DeepSpeed's
`estimate_zero3_model_states_mem_needs_all_cold` in a fresh process, as in estimate_speed.py) so both
see the same load; peak RSS is each process's own (wait4). Then a table of how time and memory grow
with the number of offerings and with the node counts searched (--max-nodes).

The offerings are typed out by name (what `--offering all` expands to), so that --checkout can time
an earlier evaplan (say a checkout of main, before issue 23) on the same question in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from estimate_speed import deepspeed_script  # benchmarks/ is this script's folder

REPO = Path(__file__).resolve().parents[1]
MODEL = "eva-clip-18b"
TARGETS = {"catalog": (1.0, 300.0), "one": (0.4, None), "compare": (1.0, None)}


def offerings() -> list[str]:
    sys.path.insert(0, str(REPO))
    from planner import profiles as prof

    return sorted(prof.index("offerings"))


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system: what a single-threaded command's wall time is on
    an idle machine, and less sensitive to other load) and peak RSS (MB) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # KiB on Linux


def evaplan(checkout: Path, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `evaplan ARGS` from a checkout (its own packages first)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # time the command, not the compiler (estimate_speed.py)
    # -P: not the current folder first on sys.path (`-m` would put it there): the checkout's code runs.
    return [sys.executable, "-P", "-m", "launcher.cli", *args], env


def median_of(
    cmd: list[str], env: dict[str, str], ds_cmd: list[str], repeat: int, ds: list[tuple[float, float]]
) -> tuple[float, float, float]:
    """Median wall and CPU seconds and the largest peak RSS over `repeat` runs (each followed by a
    run of ds_cmd, whose wall and CPU seconds go to ds)."""
    walls, cpus, rss = [], [], []
    for _ in range(repeat):
        w, c, m = run(cmd, env)
        walls.append(w)
        cpus.append(c)
        rss.append(m)
        if ds_cmd:
            ds.append(run(ds_cmd)[:2])
    return statistics.median(walls), statistics.median(cpus), max(rss)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--table-repeat", type=int, default=3, help="runs per row of the growth table; 0: no table"
    )
    ap.add_argument(
        "--checkout", type=Path, default=REPO, help="the evaplan checkout to time (default: this one)"
    )
    a = ap.parse_args(argv)
    names = offerings()
    questions = {
        "catalog": ["plan", "--model", MODEL, "--offering", *names, "--deadline", "30d"],
        "one": ["plan", "--model", MODEL, "--offering", "aws-p5", "--deadline", "30d"],
        "compare": ["compare", "--model", MODEL, "--offering", *names, "--deadline", "30d"],
    }
    ds_cmd: list[str] = []
    # Not imported here: a parent holding torch would lend its memory to every child's peak RSS.
    if importlib.util.find_spec("deepspeed") is not None:
        from planner.params import count_params
        from planner.profiles import load_model

        counts = count_params(load_model(MODEL))
        ds_cmd = [sys.executable, "-c", deepspeed_script(counts.total, counts.largest_layer, 8, 32)]
    for q in questions.values():  # warm the file cache and write the bytecode cache
        run(*evaplan(a.checkout, q))
    if ds_cmd:
        run(ds_cmd)

    print(
        f"evaplan from {a.checkout}; {len(names)} offerings; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}"
    )
    ds: list[tuple[float, float]] = []
    ok = True
    for label, q in questions.items():
        cmd, env = evaplan(a.checkout, q)
        wall, cpu, rss = median_of(cmd, env, ds_cmd, a.repeat, ds)
        t_max, rss_max = TARGETS[label]
        met = wall <= t_max and (rss_max is None or rss <= rss_max)
        ok &= met
        limit = f"≤ {t_max:.1f} s" + (f", ≤ {rss_max:.0f} MB" if rss_max else "")
        shown = " ".join(q[:4]) + (
            f" ... ({len(names)} offerings)" if label != "one" else " " + " ".join(q[4:])
        )
        print(
            f"{label:8s} evaplan {shown}: {wall:.2f} s (median of {a.repeat}; CPU {cpu:.2f} s), "
            f"peak RSS {rss:.0f} MB; "
            f"target {limit}: {'met' if met else 'NOT met'}"
        )
    if ds:
        print(
            f"yardstick: DeepSpeed estimate_zero3_model_states_mem_needs_all_cold, whole process: "
            f"{statistics.median(w for w, _ in ds):.2f} s (CPU {statistics.median(c for _, c in ds):.2f} s; "
            f"median of {len(ds)}, interleaved with the runs above)"
        )
    print(f"load average after the runs: {os.getloadavg()[0]:.1f}")

    if a.table_repeat < 1:
        return 0 if ok else 1
    print("\nhow the cost grows (plan, 30-day deadline; whole process, median of", a.table_repeat, "runs)")
    print(f"{'offerings':>9} {'max nodes':>9} {'candidates':>11} {'wall s':>7} {'CPU s':>6} {'peak MB':>8}")
    sizes = [(k, 512) for k in (1, 2, 4, 8, len(names))] + [(len(names), n) for n in (64, 128, 256)]
    for k, max_nodes in sizes:
        q = [
            "plan",
            "--model",
            MODEL,
            "--offering",
            *names[:k],
            "--deadline",
            "30d",
            "--max-nodes",
            str(max_nodes),
        ]
        cmd, env = evaplan(a.checkout, q)
        wall, cpu, rss = median_of(cmd, env, [], a.table_repeat, [])
        json_q = [*q, "--format", "json"]
        out = subprocess.run(
            evaplan(a.checkout, json_q)[0],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        cands = int(out.split('"candidates_evaluated": ', 1)[1].split(",", 1)[0])
        print(f"{k:>9} {max_nodes:>9} {cands:>11,} {wall:>7.2f} {cpu:>6.2f} {rss:>8.0f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
