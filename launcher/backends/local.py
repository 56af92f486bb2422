"""The local backend: the bundled trainer under torchrun on this machine, detached, logs to files.

The way to try evaplan end to end without a cluster. Layout of a job's work folder
(`<state dir>/jobs/<name>/`):

    ds_config.json, run_config.json   copied from the bundle (run_config: checkpoint.resume set)
    job.log                           torchrun's console: every rank's lines, `[rank<N>]:` prefixed
    logs/                             torchrun --log-dir: per-rank stdout/stderr files per attempt
    exit_code                         written when torchrun exits (absent while running)
    stopped                           written by `evaplan stop` before it signals
    <output_dir>/...                  the trainer's metrics and checkpoints (paths from run_config)

Detached with `start_new_session=True` (its own session and process group, so the CLI can exit
and ^C in the terminal does not reach it); `stop` sends SIGTERM to that process group, torchrun
forwards it to every rank, and the trainer checkpoints before exiting.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from launcher.backends.base import (
    FAILED,
    METRICS_WINDOW,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    Backend,
    Bundle,
    JobState,
    LogLine,
    RankState,
    parse_metrics_line,
)
from launcher.state import state_dir
from planner.errors import EvaplanError, RuntimeFailure

# torchrun prefixes each teed line with this (torch.distributed.run reads the template from
# TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE; ${rank} is the global rank).
RANK_PREFIX_TEMPLATE = "[rank${rank}]:"
STOP_TIMEOUT_S = 300.0
# What torchrun starts on every rank: the bundled trainer (`python -m evaclip.train`).
TRAINER_ENTRYPOINT: tuple[str, ...] = ("-m", "evaclip.train")
FOLLOW_POLL_S = 0.5

# Children this process started: polled so they are reaped (a zombie still looks alive to kill(0)).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def jobs_dir() -> Path:
    return state_dir() / "jobs"


def world_size_of(ds_config: dict[str, Any]) -> int:
    """train_batch_size = micro_batch × gradient_accumulation_steps × world size (DeepSpeed's
    batch identity), so the world size is read back from the rendered config."""
    try:
        tbs = int(ds_config["train_batch_size"])
        micro = int(ds_config["train_micro_batch_size_per_gpu"])
        accum = int(ds_config.get("gradient_accumulation_steps", 1))
    except (KeyError, TypeError, ValueError) as e:
        raise EvaplanError(f"ds_config.json lacks the batch keys ({e})", hint="re-render the bundle") from e
    if tbs % (micro * accum):
        raise EvaplanError(
            f"ds_config.json: train_batch_size {tbs} is not micro {micro} × accum {accum} × a whole world size",
            hint="re-render the bundle",
        )
    return tbs // (micro * accum)


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields from field 3 (state) on; None when the process or /proc is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (proc(5) field 22): with the pid, an
    identity that survives pid reuse."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _alive(pid: int, ticks: str | None = None) -> bool:
    """Whether *our* process still runs: not a zombie, and (when known) started when we started it."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    if Path("/proc/self/stat").is_file():
        fields = _stat(pid)
        if fields is None or fields[0] == "Z":
            return False
        return ticks is None or (len(fields) > 19 and fields[19] == ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalBackend(Backend):
    name = "local"

    def __init__(
        self,
        python: str | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        entrypoint: tuple[str, ...] | None = None,
    ) -> None:
        self.python = python or sys.executable
        self.stop_timeout_s = stop_timeout_s
        self.entrypoint = entrypoint or TRAINER_ENTRYPOINT

    # ------------------------------------------------------------------ launch
    def launch(
        self, bundle: Bundle, *, job_name: str, replace: bool, resume: bool, dry_run: bool = False
    ) -> dict[str, Any]:
        try:
            import torch
            import torch.distributed.run  # torchrun must be importable here
        except ImportError as e:
            raise EvaplanError(
                "the local backend needs torch and deepspeed",
                hint="install the `train` extra: pip install -e '.[train]'",
            ) from e
        nodes = int((bundle.plan.get("plan") or {}).get("nodes", 1))
        if nodes != 1:
            raise EvaplanError(
                f"the plan spans {nodes} nodes; the local backend runs one",
                hint="plan with --nodes 1 for a local run, or use --backend kubernetes",
            )
        nproc = world_size_of(bundle.ds_config)
        devices = max(os.cpu_count() or 1, torch.cuda.device_count())
        if nproc > devices:
            raise EvaplanError(
                f"the plan runs {nproc} ranks on one node but this machine has {os.cpu_count()} CPUs and "
                f"{torch.cuda.device_count()} GPUs",
                hint="render the bundle for a hardware profile with as many GPUs per node as this machine runs ranks",
            )
        work = jobs_dir() / job_name
        if work.exists() and not (replace or resume):
            raise EvaplanError(f"local job folder {work} exists", hint="pass --replace or --resume")
        if dry_run:
            return {"work_dir": str(work), "nproc": nproc}
        if work.exists() and replace and not resume:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        for stale in ("exit_code", "stopped"):
            (work / stale).unlink(missing_ok=True)
        run_config = bundle.run_config.model_dump(mode="json")
        # The bundle's paths are the pod's mounts (/output, /checkpoints): rebase them into the work folder.
        ckpt = {**run_config.get("checkpoint", {}), "resume": bool(resume)}
        ckpt["dir"] = _local_path(ckpt.get("dir", "checkpoints"), "checkpoints")
        run_config["checkpoint"] = ckpt
        run_config["output_dir"] = _local_path(run_config.get("output_dir", "out"), "out")
        _write_json(work / "ds_config.json", bundle.ds_config)
        _write_json(work / "run_config.json", run_config)
        attempt = len(list((work / "logs").glob("*"))) if (work / "logs").is_dir() else 0
        torchrun = [
            self.python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes=1",
            f"--nproc-per-node={nproc}",
            "--log-dir",
            f"logs/launch-{attempt}",
            "--redirects",
            "3",
            "--tee",
            "3",
            *self.entrypoint,
            "--ds-config",
            "ds_config.json",
            "--run-config",
            "run_config.json",
        ]
        # sh keeps the exit status: torchrun's code lands in exit_code once it is done. The trap
        # gives sh a handler (not an ignore, which children would inherit) so that it survives
        # the group SIGTERM long enough to write the file.
        script = (
            f"trap : TERM INT; {shlex.join(torchrun)} >> job.log 2>&1; code=$?; "
            "echo $code > exit_code.tmp && mv exit_code.tmp exit_code"
        )
        env = {
            **os.environ,
            "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX_TEMPLATE,
            "PYTHONUNBUFFERED": "1",
        }
        env.setdefault("OMP_NUM_THREADS", "1")
        with open(work / "job.log", "ab") as log:
            log.write(
                f"# evaplan: {'resume' if resume else 'launch'} {datetime.now(timezone.utc).isoformat()}: "
                f"{shlex.join(torchrun)}\n".encode()
            )
            proc = subprocess.Popen(
                ["/bin/sh", "-c", script],
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        metrics = work / run_config.get("output_dir", "out") / run_config.get("metrics_file", "metrics.jsonl")
        return {
            "pid": proc.pid,
            "pgid": proc.pid,
            "pid_start_ticks": start_ticks(proc.pid),
            "work_dir": str(work),
            "nproc": nproc,
            "metrics_path": str(metrics),
            "command": torchrun,
        }

    # ------------------------------------------------------------------ status
    def _work(self, record: Any) -> Path:
        return Path(record.backend_data["work_dir"])

    def state(self, record: Any) -> JobState:
        d = record.backend_data
        work = self._work(record)
        code_file = work / "exit_code"
        nproc = int(d.get("nproc", 1))
        if code_file.is_file():
            code = int(code_file.read_text().strip() or 1)
            finished = datetime.fromtimestamp(code_file.stat().st_mtime, timezone.utc)
            if (work / "stopped").is_file():
                phase, msg = STOPPED, f"stopped by `evaplan stop` (torchrun exit code {code})"
            elif code == 0:
                phase, msg = SUCCEEDED, None
            else:
                phase, msg = FAILED, f"torchrun exited with code {code}: {self._last_error(work)}"
        elif _alive(int(d["pid"]), d.get("pid_start_ticks")):
            phase, msg, finished = RUNNING, None, None
        else:
            phase, msg = FAILED, "the process group is gone without an exit code (killed?)"
            finished = None
        ranks = [
            RankState(
                rank=r,
                name=f"{record.name}/rank{r}",
                phase=phase,
                reason=None if phase in (RUNNING, SUCCEEDED, STOPPED) else "Error",
                message=None,
                restarts=self._restarts(work),
                node=os.uname().nodename,
            )
            for r in range(nproc)
        ]
        return JobState(
            phase=phase, ranks=ranks, message=msg, started_at=record.started_at, finished_at=finished
        )

    @staticmethod
    def _restarts(work: Path) -> int:
        attempts = list((work / "logs").glob("*/*/attempt_*")) if (work / "logs").is_dir() else []
        return max(0, len({a.name for a in attempts}) - 1)

    @staticmethod
    def _last_error(work: Path) -> str:
        last = ""
        for line in _read_lines(work / "job.log"):
            if "Error" in line or "error" in line:
                last = line
        return last.strip()[:300] or "see `evaplan logs`"

    # ------------------------------------------------------------------ logs and metrics
    def logs(self, record: Any, *, follow: bool, tail: int | None, rank: int | None) -> Iterator[LogLine]:
        path = self._work(record) / "job.log"
        wanted = (lambda ll: ll.rank == rank) if rank is not None else (lambda ll: True)
        with open(path, encoding="utf-8", errors="replace") as f:
            lines: Iterator[LogLine] = (ll for ll in (_parse_log_line(x) for x in f) if wanted(ll))
            if tail is not None:
                lines = iter(deque(lines, maxlen=tail))  # one pass, at most `tail` lines held
            yield from lines
            if not follow:
                return
            partial = ""
            while True:
                chunk = f.readline()
                if chunk:
                    partial += chunk
                    if partial.endswith("\n"):
                        ll = _parse_log_line(partial)
                        partial = ""
                        if wanted(ll):
                            yield ll
                    continue
                d = record.backend_data
                if (self._work(record) / "exit_code").is_file() or not _alive(
                    int(d["pid"]), d.get("pid_start_ticks")
                ):
                    rest = f.read()
                    for x in (partial + rest).splitlines():
                        ll = _parse_log_line(x)
                        if wanted(ll):
                            yield ll
                    return
                time.sleep(FOLLOW_POLL_S)

    def recent_metrics(self, record: Any, n: int = METRICS_WINDOW) -> list[dict[str, Any]]:
        path = Path(record.backend_data["metrics_path"])
        if not path.is_file():
            return []
        # Step records plus the few other events between them (start, checkpoint, end).
        recs = [r for r in (parse_metrics_line(x) for x in _tail_lines(path, 2 * n + 10)) if r is not None]
        return recs[-n:]

    # ------------------------------------------------------------------ stop
    def stop(self, record: Any) -> None:
        work = self._work(record)
        pgid = int(record.backend_data["pgid"])
        if (work / "exit_code").is_file():
            return  # already done
        ticks = record.backend_data.get("pid_start_ticks")
        if not _alive(pgid, ticks):
            return  # gone (or the pid now belongs to someone else: never signal that)
        (work / "stopped").write_text(datetime.now(timezone.utc).isoformat() + "\n")
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.stop_timeout_s
        while not (work / "exit_code").is_file() and _alive(pgid, ticks):
            if time.monotonic() > deadline:
                kill_tree(pgid)
                raise RuntimeFailure(
                    f"job '{record.name}' did not exit within {self.stop_timeout_s:.0f}s of SIGTERM; "
                    "killed it (no checkpoint guaranteed)",
                    hint="see `evaplan logs`",
                )
            time.sleep(0.2)
        # exit_code is written after torchrun exits; the ranks are gone by then.
        child = _CHILDREN.pop(pgid, None)
        if child is not None:
            child.wait(timeout=10)


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (Linux /proc): torchrun starts each rank in its own session,
    so the ranks are outside our process group."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    for d in proc.iterdir() if proc.is_dir() else []:
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(pgid: int) -> None:
    """SIGKILL the job's process group and every rank below it (the last resort of `stop`)."""
    for pid in _descendants(pgid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _local_path(p: str, default: str) -> str:
    """A pod mount path (absolute) becomes a folder of the same name in the work folder."""
    if not Path(p).is_absolute():
        return p
    return Path(p).name or default


def _parse_log_line(line: str) -> LogLine:
    line = line.rstrip("\n")
    if line.startswith("[rank"):
        head, sep, rest = line.partition("]:")
        if sep and head[5:].isdigit():
            return LogLine(rank=int(head[5:]), text=rest)
    return LogLine(rank=None, text=line)


def _read_lines(path: Path) -> Iterator[str]:
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        yield from f


def _tail_lines(path: Path, n: int, block_bytes: int = 65536) -> list[str]:
    """The last `n` lines, reading backwards in blocks (metrics files grow with the run)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= n:
            start = max(0, end - block_bytes)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    return data.decode(errors="replace").splitlines()[-n:]


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)
