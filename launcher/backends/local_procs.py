"""Finding a local job's processes again, whoever their parent is now (Linux /proc).

torchrun starts every rank in a session of its own (torch.distributed.elastic's
SubprocessHandler uses `start_new_session=True`), so a process group cannot hold a whole local
job. Each job therefore carries a label, as its Kubernetes objects do: the environment variable
`EVAPLAN_LOCAL_JOB=<launch id>` set on the supervisor and inherited by torchrun, every rank and
every compiler a rank runs. A process's initial environment (/proc/<pid>/environ) cannot be
changed from outside and dies with the process, so the label also rules out pid reuse.
Zombies have no environment and so never count as alive.

No torch import here: the supervisor and `evaplan status` load this module.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

JOB_ENV = "EVAPLAN_LOCAL_JOB"
PROC = Path("/proc")


@dataclass(frozen=True)
class JobProcess:
    pid: int
    start_ticks: str | None
    rank: int | None  # RANK from its environment (torchrun sets it on each rank and its children)
    cwd: str | None


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields from field 3 (state) on; None when the process is gone."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (proc(5) field 22): with the pid, an
    identity that survives pid reuse."""
    fields = stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def alive(pid: int, ticks: str | None = None) -> bool:
    """Whether this very process still runs: not a zombie, and (when known) started at `ticks`."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return ticks is None or (len(fields) > 19 and fields[19] == ticks)


def _environ(pid: int) -> dict[str, str] | None:
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or another user's process
        return None
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def job_processes(launch_id: str, *, exclude: Iterable[int] = ()) -> list[JobProcess]:
    """Every live process labelled with `launch_id`, wherever it sits in the process tree."""
    skip = {os.getpid(), *exclude}
    found = []
    try:
        entries = [int(d.name) for d in PROC.iterdir() if d.name.isdigit()]
    except OSError:
        return []
    for pid in entries:
        if pid in skip:
            continue
        env = _environ(pid)
        if not env or env.get(JOB_ENV) != launch_id:
            continue
        ticks = start_ticks(pid)
        if ticks is None or not alive(pid, ticks):
            continue
        try:
            cwd: str | None = os.readlink(PROC / str(pid) / "cwd")
        except OSError:
            cwd = None
        rank = env.get("RANK")
        found.append(JobProcess(pid, ticks, int(rank) if rank and rank.isdigit() else None, cwd))
    return found


def signal_processes(procs: Iterable[JobProcess], sig: int) -> None:
    """Send `sig` to each process that is still the one we found (same start time)."""
    for p in procs:
        if alive(p.pid, p.start_ticks):
            try:
                os.kill(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def end_job(
    launch_id: str,
    grace_s: float,
    *,
    exclude: Iterable[int] = (),
    confirm_s: float = 60.0,
    poll_s: float = 0.2,
) -> tuple[list[JobProcess], list[JobProcess]]:
    """SIGTERM every process of the job, wait up to `grace_s` for them to exit, SIGKILL what is
    left and wait up to `confirm_s` until nothing of the job lives. Returns (the processes that
    needed SIGKILL, those still alive after all: empty unless one is stuck in the kernel)."""
    exclude = tuple(exclude)
    procs = job_processes(launch_id, exclude=exclude)
    signal_processes(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while procs and time.monotonic() < deadline:
        time.sleep(poll_s)
        procs = job_processes(launch_id, exclude=exclude)
    killed = procs
    # Keep killing: a dying parent may still fork, and a process in uninterruptible sleep dies
    # only when it wakes.
    deadline = time.monotonic() + confirm_s
    while procs and time.monotonic() < deadline:
        signal_processes(procs, signal.SIGKILL)
        time.sleep(poll_s)
        procs = job_processes(launch_id, exclude=exclude)
    return killed, procs


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
