"""The local job's supervisor: a small process that outlives the CLI, runs torchrun, and records
how the job ended.

    python -m launcher.backends.local_supervisor WORK_DIR

reads WORK_DIR/supervisor-spec.json (written by LocalBackend.launch), detaches (fork, setsid,
fork: the CLI gets the supervisor's pid on stdout and may exit; the supervisor is re-parented to
init and is the leader of a new session and process group), and then:

- becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER, Linux ≥ 3.4), so that ranks orphaned
  by a dying torchrun are re-parented to it rather than to init, and reaps every child;
- starts torchrun in its own process group; every process of the job carries the label
  EVAPLAN_LOCAL_JOB (local_procs.py), which is how stragglers are found whatever their parent;
- on SIGTERM/SIGINT (`evaplan stop`) passes SIGTERM to torchrun (which passes it to the ranks:
  they checkpoint), and after the grace period kills whatever is left;
- when torchrun ends, for any reason: ends every process of the job that still lives (SIGTERM,
  grace, SIGKILL) and only then records the outcome in WORK_DIR/supervisor.json: phase, torchrun's
  exit code or signal, which rank failed first and why (torchrun's "Root Cause" summary), and that
  rank's last log line; plus WORK_DIR/exit_code;
- with a deadline (budget ÷ price, from `launch --max-cost`), stops the job as `stop` would when
  the deadline passes, so the budget holds with no monitor running;
- has the kernel send torchrun SIGTERM if the supervisor itself dies (prctl PR_SET_PDEATHSIG), so
  a killed supervisor stops the job rather than leaving it to train past its budget;
- every LOCK_SWEEP_S removes a stale DeepSpeed op build lock (build_lock.py) that would make a
  rank wait forever.

All it imports is the standard library, local_procs and build_lock: it starts fast, no torch.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from launcher.backends.build_lock import clear_stale_build_locks
from launcher.backends.local_procs import (
    JOB_ENV,
    JobProcess,
    end_job,
    job_processes,
    signal_name,
    start_ticks,
)

SPEC_FILE = "supervisor-spec.json"
STATE_FILE = "supervisor.json"
LOG_FILE = "job.log"
# linux/prctl.h: PR_SET_CHILD_SUBREAPER.
PR_SET_CHILD_SUBREAPER = 36
# The ranks' own stop time (epoch seconds): evaclip/trainer.py STOP_AT_ENV reads it (the trainer
# imports torch, which this process must not, so the name is written in both places; a test checks
# they agree). The margin keeps this supervisor the one that stops the job while it lives, so its
# record says why; 10 s is two of its polls and seconds of one node's price.
STOP_AT_ENV = "EVACLIP_STOP_AT_EPOCH_S"
RANK_DEADLINE_MARGIN_S = 10.0
# linux/prctl.h: PR_SET_PDEATHSIG (the signal a child gets when its parent dies; kept across execve).
PR_SET_PDEATHSIG = 1
POLL_S = 0.2
# How often the supervisor looks for a stale DeepSpeed op build lock while the job runs (one left
# by a build killed shortly before this launch, too recently active for `launch` to judge).
LOCK_SWEEP_S = 15.0

# torchrun's failure summary (torch/distributed/elastic/multiprocessing/errors/__init__.py,
# _FAILURE_FORMAT_TEMPLATE): the first failure is printed after "Root Cause".
_ROOT_RANK = re.compile(r"^\s*rank\s*:\s*(\d+) \(local_rank: (\d+)\)")
_ROOT_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+) \(pid: (\d+)\)\s*(\S*)")
_ROOT_TRACE = re.compile(r"^\s*traceback\s*:\s*(.*)")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_state(work: Path) -> dict[str, Any]:
    try:
        doc = json.loads((work / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def rank_last_lines(work: Path, max_bytes: int = 1 << 20) -> dict[int, str]:
    """Each rank's last non-empty log line in job.log (torchrun prefixes them `[rank<N>]:`)."""
    path = work / LOG_FILE
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return {}
    last: dict[int, str] = {}
    for line in text.splitlines():
        if line.startswith("[rank"):
            head, sep, rest = line.partition("]:")
            if sep and head[5:].isdigit() and rest.strip():
                last[int(head[5:])] = rest.strip()
    return last


def root_cause(work: Path, since: int) -> dict[str, Any] | None:
    """torchrun's first observed failure, from the log written after byte `since`."""
    try:
        with open(work / LOG_FILE, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    at = text.rfind("Root Cause")
    if at < 0:
        return None
    out: dict[str, Any] = {}
    for line in text[at:].splitlines()[:12]:
        if m := _ROOT_RANK.match(line):
            out["rank"] = int(m.group(1))
        elif m := _ROOT_EXIT.match(line):
            code = int(m.group(1))
            out["exitcode"] = code
            if code < 0:
                out["signal"] = signal_name(-code)
        elif m := _ROOT_TRACE.match(line):
            out["traceback"] = m.group(1).strip()[:300]
    return out if "rank" in out else None


class Supervisor:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.spec = json.loads((work / SPEC_FILE).read_text(encoding="utf-8"))
        self.launch_id: str = self.spec["launch_id"]
        self.stop_requested: str | None = None
        self.state: dict[str, Any] = {}

    def _record(self, **changes: Any) -> None:
        self.state.update(changes)
        write_json_atomic(self.work / STATE_FILE, self.state)

    def _log(self, line: str) -> None:
        print(f"# evaplan supervisor: {line}", flush=True)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_requested is None:
            self.stop_requested = f"stopped ({signal_name(signum)} to the supervisor)"

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal that launched us may close
        try:
            libc: Any = ctypes.CDLL(None, use_errno=True)
            subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            libc, subreaper = None, False
        log_start = (self.work / LOG_FILE).stat().st_size if (self.work / LOG_FILE).exists() else 0
        deadline_s = self.spec.get("deadline_s")
        t0 = time.monotonic()
        env = {**os.environ, **self.spec.get("env", {}), JOB_ENV: self.launch_id}
        if deadline_s is not None:
            # The ranks hold the budget themselves too, a little after this supervisor would stop
            # them: should both the supervisor and torchrun be killed (-9), no one else would.
            env[STOP_AT_ENV] = f"{time.time() + float(deadline_s) + RANK_DEADLINE_MARGIN_S:.3f}"
        pid = self._start_torchrun(env, libc)
        self._record(
            phase="Running",
            launch_id=self.launch_id,
            supervisor_pid=os.getpid(),
            supervisor_start_ticks=start_ticks(os.getpid()),
            pgid=os.getpgid(0),
            torchrun_pid=pid,
            torchrun_start_ticks=start_ticks(pid),
            subreaper=subreaper,
            started_at=now_iso(),
            deadline_s=deadline_s,
        )
        self._log(f"torchrun pid {pid}; supervisor pid {os.getpid()}, process group {os.getpgid(0)}")
        status, why_stopped = self._watch(pid, deadline_s, t0)
        straggler_ranks, left = self._end_stragglers()
        outcome = self._outcome(status, why_stopped, straggler_ranks, log_start)
        if left:
            outcome["message"] += f"; {len(left)} process(es) could not be killed: {[p.pid for p in left]}"
        self._log(f"{outcome['phase']}: {outcome['message'] or 'done'}")
        code = os.waitstatus_to_exitcode(status)
        exit_code_text = str(code if code >= 0 else 128 - code)
        self._record(**outcome, finished_at=now_iso(), alive_after=[p.pid for p in left])
        (self.work / "exit_code.tmp").write_text(exit_code_text + "\n")
        os.replace(self.work / "exit_code.tmp", self.work / "exit_code")
        return 0

    def _start_torchrun(self, env: dict[str, str], libc: Any) -> int:
        """Fork torchrun into the supervisor's process group; returns its pid."""
        me = os.getpid()
        pid = os.fork()
        if pid == 0:  # torchrun, in the supervisor's process group
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_DFL)
                # If the supervisor dies (even by SIGKILL), the kernel sends torchrun SIGTERM, which
                # torchrun passes to every rank: they checkpoint and exit, so no rank trains on
                # without the deadline (the budget) that only the supervisor enforces.
                if libc is not None:
                    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
                if os.getppid() != me:  # the supervisor died before that took effect
                    os._exit(128 + signal.SIGTERM)
                argv = self.spec["argv"]
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        return pid

    def _watch(self, pid: int, deadline_s: float | None, t0: float) -> tuple[int, str | None]:
        """Until torchrun exits: stop it on a signal or at the deadline (SIGTERM, then kill after the
        grace), and sweep stale build locks meanwhile. Returns its wait status and why it was stopped."""
        why_stopped: str | None = None
        grace_s = float(self.spec.get("grace_s", 300.0))
        term_sent_at: float | None = None
        roots = [Path(r) for r in self.spec.get("torch_extensions_roots") or [] if isinstance(r, str)]
        next_sweep = time.monotonic() + LOCK_SWEEP_S
        while True:
            try:
                got, st = os.waitpid(-1, os.WNOHANG)  # reap torchrun and any orphan re-parented to us
            except ChildProcessError:
                got, st = 0, 0
            if got == pid:
                return st, why_stopped
            if got:
                continue
            if why_stopped is None and self.stop_requested:
                why_stopped = self.stop_requested
            if why_stopped is None and deadline_s is not None and time.monotonic() - t0 > deadline_s:
                why_stopped = f"budget: the deadline of {deadline_s:.0f}s (budget ÷ price) passed"
                self._log(why_stopped + "; stopping the job")
            if why_stopped and term_sent_at is None:
                term_sent_at = time.monotonic()
                self._record(stopping=why_stopped)
                try:
                    os.kill(pid, signal.SIGTERM)  # torchrun passes it to every rank
                except ProcessLookupError:
                    pass
            if roots and time.monotonic() > next_sweep:
                next_sweep = time.monotonic() + LOCK_SWEEP_S
                self._sweep_locks(roots)
            if term_sent_at is not None and time.monotonic() - term_sent_at > grace_s:
                self._log(f"the job did not exit within {grace_s:.0f}s of SIGTERM; killing it")
                end_job(self.launch_id, 0.0)
            time.sleep(POLL_S)

    def _sweep_locks(self, roots: list[Path]) -> None:
        try:
            for note in clear_stale_build_locks(roots=roots, quiet_s=self.spec.get("lock_quiet_s")):
                self._log(note)
        except Exception as e:  # a lock we cannot remove must not end the supervisor
            self._log(f"stale lock sweep: {e}")

    def _end_stragglers(self) -> tuple[list[int], list[JobProcess]]:
        """torchrun is gone: end whatever of the job still lives (ranks orphaned by a killed
        torchrun). Returns the ranks that were left and the processes that could not be killed."""
        stragglers = job_processes(self.launch_id)
        straggler_ranks = sorted({p.rank for p in stragglers if p.rank is not None})
        if stragglers:
            self._log(
                f"torchrun ended but {len(stragglers)} process(es) of the job still run"
                + (f" (ranks {', '.join(map(str, straggler_ranks))})" if straggler_ranks else "")
                + "; ending them"
            )
        _killed, left = end_job(self.launch_id, float(self.spec.get("straggler_grace_s", 30.0)))
        while True:  # reap what ended
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        return straggler_ranks, left

    def _outcome(
        self, status: int, why_stopped: str | None, straggler_ranks: list[int], log_start: int
    ) -> dict[str, Any]:
        code = os.waitstatus_to_exitcode(status)
        out: dict[str, Any] = {"torchrun_exit_code": code if code >= 0 else None}
        if code < 0:
            out["torchrun_signal"] = signal_name(-code)
        by_stop = (self.work / "stopped").exists()  # `evaplan stop` writes it before it signals
        if why_stopped or by_stop:
            out["phase"] = "Stopped"
            budget = why_stopped if why_stopped and why_stopped.startswith("budget") else None
            out["message"] = budget or ("stopped by `evaplan stop`" if by_stop else why_stopped)
            return out
        if code == 0:
            out.update(phase="Succeeded", message="")
            return out
        out["phase"] = "Failed"
        cause = root_cause(self.work, log_start)
        last = rank_last_lines(self.work)
        if cause is not None:
            r = cause["rank"]
            how = (
                f"was killed by {cause['signal']}"
                if cause.get("signal")
                else f"exited with code {cause.get('exitcode')}"
            )
            out["failed_rank"] = r
            out["failed_rank_reason"] = cause.get("signal") or f"exit code {cause.get('exitcode')}"
            detail = last.get(r) or cause.get("traceback") or ""
            out["message"] = f"rank {r} {how}" + (f"; its last line: {detail[:200]}" if detail else "")
        elif code < 0:
            out["message"] = f"torchrun was killed by {signal_name(-code)}" + (
                f"; the supervisor ended ranks {', '.join(map(str, straggler_ranks))} that still ran"
                if straggler_ranks
                else ""
            )
        else:
            tail = [v for _, v in sorted(last.items())]
            out["message"] = f"torchrun exited with code {code}" + (
                f"; last line: {tail[-1][:200]}" if tail else ""
            )
        return out


def daemonize(work: Path) -> None:
    """fork, setsid, fork: print the supervisor's pid for the launcher and leave it detached."""
    r, w = os.pipe()
    if os.fork() > 0:  # the launcher's child: wait for the grandchild's pid, pass it on, exit
        os.close(w)
        with os.fdopen(r) as f:
            sys.stdout.write(f.read())
        sys.stdout.flush()
        os._exit(0)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.write(w, f"{os.getpid()}\n".encode())
    os.close(w)
    os.chdir(work)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open(work / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m launcher.backends.local_supervisor WORK_DIR", file=sys.stderr)
        return 2
    work = Path(args[0]).resolve()
    sup = Supervisor(work)  # read the spec before detaching: a bad spec fails in the launcher
    daemonize(work)
    try:
        return sup.run()
    except Exception as e:  # the supervisor's own failure is part of the record, not a silent exit
        sup._log(f"internal error: {type(e).__name__}: {e}")
        end_job(sup.launch_id, 30.0)
        sup._record(
            phase="Failed", message=f"the supervisor failed: {type(e).__name__}: {e}", finished_at=now_iso()
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
