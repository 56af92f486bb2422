"""How long `evaplan status` and `evaplan list` wait for a Kubernetes API server that accepts
connections and never answers (issue 13: they ran past 100 s), with the shipped timeouts.

    python benchmarks/hung_api_server.py [--jobs 3]

Starts a TCP listener on 127.0.0.1 that accepts and stays silent, writes a kubeconfig for it and a
job store with `--jobs` Kubernetes jobs on it (in a temporary folder), then runs `evaplan status`
and `evaplan list` as subprocesses and prints each one's wall time, exit code, last line and how
many connections the server saw. The bound they should stay under is kube_api.CALL_BUDGET_S (one
call, retries included) plus start-up; `list` pays it once, not once per job.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=3)
    args = ap.parse_args()
    from launcher.backends.kube_api import CALL_BUDGET_S, CONNECT_TIMEOUT_S, READ_TIMEOUT_S
    from launcher.state import JobRecord, JobStore

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    threading.Thread(target=serve, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "kubeconfig"
        cfg.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "hung",
                    "clusters": [
                        {"name": "hung", "cluster": {"server": f"http://127.0.0.1:{sock.getsockname()[1]}"}}
                    ],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [
                        {"name": "hung", "context": {"cluster": "hung", "user": "u", "namespace": "ml"}}
                    ],
                }
            )
        )
        state = Path(tmp) / "state"
        store = JobStore(state)
        basis = {
            "nodes": 2,
            "usd_per_node_hour": 55.04,
            "total_steps": 10,
            "global_batch": 32,
            "estimate_usd": 1.0,
        }
        for i in range(args.jobs):
            store.put(
                JobRecord(
                    name=f"j{i}",
                    backend="kubernetes",
                    bundle_dir="/nonexistent",
                    plan={"cost_basis": basis},
                    estimate={},
                    namespace="ml",
                    backend_data={"kubeconfig": str(cfg), "workload": ["batch/v1", "Job", f"j{i}"]},
                )
            )
        env = {**os.environ, "EVAPLAN_STATE_DIR": str(state)}
        print(
            f"timeouts: connect {CONNECT_TIMEOUT_S:.0f} s, read {READ_TIMEOUT_S:.0f} s, "
            f"one call at most {CALL_BUDGET_S:.0f} s; {args.jobs} jobs on the hung server"
        )
        for cmd in (["status", "j0"], ["list"]):
            before = len(accepted)
            t0 = time.monotonic()
            p = subprocess.run(
                [sys.executable, "-m", "launcher.cli", *cmd],
                env=env,
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            wall = time.monotonic() - t0
            last = (p.stderr or p.stdout).strip().splitlines()[-1] if (p.stderr or p.stdout).strip() else ""
            print(
                f"evaplan {' '.join(cmd)}: {wall:.1f} s, exit {p.returncode}, "
                f"{len(accepted) - before} connections; {last[:160]}"
            )
    stop.set()
    for c in accepted:
        c.close()
    sock.close()


if __name__ == "__main__":
    main()
