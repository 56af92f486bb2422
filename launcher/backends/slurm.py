"""The slurm backend: a `--flavor slurm` bundle submitted with sbatch, watched with scontrol.

Layout of a job's folder on the cluster's shared filesystem (`<work dir>/<job>`, rendered into the
bundle: launcher/slurm_script.py):

    job.sbatch                       the batch script, as rendered
    config/ds_config.json, config/run_config.json
    checkpoints/, output/            the trainer's (run_config.json; the trainer resumes from checkpoints/)
    slurm-<job id>.out               every rank's lines, `[rank<N>]:` prefixed (torchrun --tee)

Slurm's own commands do everything (sbatch(1), scontrol(1), scancel(1) of Slurm 22.05+): `sacct` needs
accounting storage that many clusters (and the test cluster) lack, so state comes from `scontrol show
job`, which knows a job until MinJobAge (default 300 s) after it ends; the job store keeps the last
phase seen. Every job carries the comment `evaplan-owner:<owner id>` and its job name: `stop` cancels a
job only when both match this store's record.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from launcher.backends.base import (
    FAILED,
    METRICS_WINDOW,
    PENDING,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    TERMINAL_PHASES,
    UNKNOWN,
    Backend,
    JobState,
    LaunchOptions,
    LogLine,
    RankState,
    register,
)
from launcher.backends.local import _parse_log_line, _tail_lines, metrics_in_file, world_size_of
from launcher.bundle import SLURM_FLAVOR, Bundle
from launcher.config import SLURM_CONFIG_PARAMS
from launcher.monitor import fmt_duration
from launcher.slurm_script import CONFIG_DIR_NAME, SCRIPT_FILE
from planner.errors import EvaplanError, RuntimeFailure

# `--backend slurm`, second in its list of choices, and
# where it runs, as `--backend`'s help says (read by base.declared_backends without importing this module).
BACKEND = "slurm"
BACKEND_LISTED = 2
BACKEND_RUNS = "a Slurm cluster (sbatch)"

OWNER_COMMENT = "evaplan-owner:"
STOP_MARKER = "stopped-"  # <job dir>/stopped-<job id>: written by `evaplan stop` before its SIGTERM
COMMAND_TIMEOUT_S = 60.0  # one client command; the controller answers in milliseconds when up
FOLLOW_POLL_S = 1.0
STOP_POLL_S = 0.5
# What each of Slurm's job states means here (squeue(1), "JOB STATE CODES").
_STATES: dict[str, str] = {
    "PENDING": PENDING,
    "REQUEUED": PENDING,
    "REQUEUE_FED": PENDING,
    "REQUEUE_HOLD": PENDING,
    "RESV_DEL_HOLD": PENDING,
    "SUSPENDED": PENDING,
    "STOPPED": PENDING,
    "CONFIGURING": RUNNING,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "SIGNALING": RUNNING,
    "STAGE_OUT": RUNNING,
    "RESIZING": RUNNING,
    "COMPLETED": SUCCEEDED,
    "CANCELLED": STOPPED,
    "FAILED": FAILED,
    "TIMEOUT": FAILED,
    "NODE_FAIL": FAILED,
    "OUT_OF_MEMORY": FAILED,
    "BOOT_FAIL": FAILED,
    "DEADLINE": FAILED,
    "PREEMPTED": FAILED,
    "SPECIAL_EXIT": FAILED,
    "REVOKED": FAILED,
}
# Terminal states and the reason `status` shows for them.
_END_REASONS = {
    "TIMEOUT": "TimeLimit: the job ran past its --time",
    "NODE_FAIL": "NodeFail: a node of the job failed",
    "OUT_OF_MEMORY": "OutOfMemory: a task went over --mem",
    "BOOT_FAIL": "BootFail: a node failed to boot",
    "DEADLINE": "Deadline: the job's --deadline passed",
    "PREEMPTED": "Preempted: a higher-priority job took the nodes",
}
# Pending reasons (squeue(1), "JOB REASON CODES") put in words; others are shown as Slurm says them.
_PENDING_REASONS = {
    "Resources": "waiting for nodes with the requested resources",
    "Priority": "queued behind jobs of higher priority",
    "ReqNodeNotAvail": "a node the job needs is down, drained or reserved",
    "NodeDown": "a node the job needs is down",
    "BeginTime": "requeued; waits for its begin time",
    "PartitionTimeLimit": "--time is over the partition's limit: render with a lower --time-limit",
    "PartitionNodeLimit": "more nodes than the partition allows",
    "PartitionDown": "the partition is down",
    "QOSMaxWallDurationPerJobLimit": "--time is over the QOS's limit",
    "JobHeldUser": "held by its user (scontrol release)",
    "JobHeldAdmin": "held by an administrator",
    "Dependency": "waiting for a dependency",
}


# ---------------------------------------------------------------------- the client commands
def _run(tool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one Slurm client command as it is; a missing command or no answer is one line (exit 2)."""
    exe = shutil.which(tool)
    if exe is None:
        raise EvaplanError(
            f"{tool} is not on PATH: the slurm backend runs Slurm's client commands",
            hint="run evaplan on a login node of the cluster, or install Slurm's client (slurm-client)",
        )
    try:
        return subprocess.run(
            [exe, *args], input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise EvaplanError(
            f"{tool} got no answer within {COMMAND_TIMEOUT_S:.0f} s: the Slurm controller does not respond",
            hint="check `scontrol ping`",
        ) from None


def _slurm(tool: str, *args: str, stdin: str | None = None) -> str:
    """Run one Slurm client command; its stdout. Missing commands, a controller that does not answer
    and unknown partitions/accounts/QOS become one line (exit 2); other failures a runtime error."""
    p = _run(tool, *args, stdin=stdin)
    if p.returncode != 0:
        raise _slurm_error(tool, p.stderr.strip() or p.stdout.strip())
    return p.stdout


def _slurm_error(tool: str, text: str) -> EvaplanError:
    line = next((x for x in reversed(text.splitlines()) if x.strip()), f"{tool} failed with no message")
    line = re.sub(r"^\w+: error: ", "", line.strip())
    low = line.lower()
    if any(
        s in low
        for s in (
            "unable to contact slurm controller",
            "connection refused",
            "socket timed out",
            "zero bytes",
        )
    ):
        return EvaplanError(
            f"the Slurm controller does not answer ({tool}: {line})",
            hint="check `scontrol ping` and that $SLURM_CONF names this cluster's slurm.conf",
        )
    for what, flag in (("partition", "--partition"), ("account", "--account"), ("qos", "--qos")):
        if f"invalid {what}" in low:
            return EvaplanError(
                f"Slurm refused the job: {line}",
                hint=f"re-render with a {flag} that exists (`sinfo -s`, `sacctmgr show assoc user=$USER`)",
            )
    if "requested node configuration is not available" in low or "time limit" in low:
        return EvaplanError(
            f"Slurm refused the job: {line}",
            hint="the partition's nodes or limits cannot hold it: check --partition, --constraint, "
            "--time-limit and --cpu-per-node against `sinfo -N -l`",
        )
    return RuntimeFailure(f"{tool} failed: {line}", hint="see the Slurm controller's log")


def parse_record(text: str) -> dict[str, str]:
    """`scontrol show job -o` / `show node -o` output: Key=Value pairs, values up to the next key."""
    out: dict[str, str] = {}
    for m in re.finditer(
        r"(?:^|\s)([A-Za-z][A-Za-z0-9/:_]*)=(.*?)(?=\s+[A-Za-z][A-Za-z0-9/:_]*=|$)", text.strip()
    ):
        out[m.group(1)] = m.group(2).strip()
    return out


def _job_info(job_id: str) -> dict[str, str] | None:
    """scontrol's record of the job; None when the controller no longer knows it (purged)."""
    p = _run("scontrol", "show", "job", "-o", job_id)
    if p.returncode != 0:
        if "invalid job id" in (p.stderr + p.stdout).lower():
            return None
        raise _slurm_error("scontrol", p.stderr or p.stdout)
    return parse_record(p.stdout.splitlines()[0]) if p.stdout.strip() else None


def _slurm_time(value: str | None) -> datetime | None:
    """scontrol's times are the cluster's local time without a zone ('Unknown'/'None' when unset)."""
    if not value or not value[0].isdigit():
        return None
    try:
        return datetime.fromisoformat(value).astimezone()
    except ValueError:
        return None


def _down_nodes() -> list[str]:
    """'node N is DOWN: reason' for each node that is down, drained or failing (at most 5)."""
    out = []
    for line in _slurm("scontrol", "show", "node", "-o").splitlines():
        rec = parse_record(line)
        state = rec.get("State", "")
        if any(s in state for s in ("DOWN", "DRAIN", "FAIL", "NOT_RESPONDING")):
            reason = rec.get("Reason", "") or "no reason given"
            out.append(f"node {rec.get('NodeName')} is {state}: {reason}")
    return out[:5]


# ---------------------------------------------------------------------- the bundle on the cluster
def job_dir_of(bundle: Bundle) -> Path:
    """<work dir>/<job>, from the run config the renderer wrote (output_dir = <job dir>/output)."""
    out = PurePosixPath(bundle.run_config.output_dir)
    ckpt = PurePosixPath(bundle.run_config.checkpoint.dir)
    if not out.is_absolute() or out.name != "output" or ckpt != out.parent / "checkpoints":
        raise EvaplanError(
            f"bundle {bundle.path}: run_config.json's output_dir {str(out)!r} and checkpoint.dir {str(ckpt)!r} "
            "are not <job dir>/output and <job dir>/checkpoints",
            hint="re-render it with `evaplan render --flavor slurm --work-dir DIR`",
        )
    if out.parent.name != bundle.job_name or ".." in out.parts:
        raise EvaplanError(
            f"bundle {bundle.path}: the job folder {out.parent} is not named after job {bundle.job_name}",
            hint="re-render it; do not edit bundle files by hand",
        )
    return Path(str(out.parent))


def _has_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _signal_lead_s(script: str) -> int:
    m = re.search(r"^#SBATCH --signal=TERM@(\d+)$", script, re.M)
    return int(m.group(1)) if m else 0


def _script_minutes(script: str) -> int | None:
    m = re.search(r"^#SBATCH --time=(\d+)$", script, re.M)
    return int(m.group(1)) if m else None


@register
class SlurmBackend(Backend):
    name = BACKEND
    stop_announcement = "its Slurm job's steps (scancel --signal=TERM)"
    render_flavor = SLURM_FLAVOR
    # The slurm flavour's settings from evaplan.toml (partition, account, work_dir, ...).
    render_config_params = SLURM_CONFIG_PARAMS

    @classmethod
    def budget_enforcement(cls, deadline_s: int) -> str:
        return (
            f"budget enforced by Slurm: the job's --time stops it after at most "
            f"{fmt_duration(deadline_s)} of running"
        )

    def set_deadline(self, deadline_s: float | None) -> None:
        """Slurm enforces the budget: the job's --time is lowered to the minutes it buys."""
        self.deadline_s = deadline_s

    def _time_override(self, script: str) -> list[str]:
        if self.deadline_s is None:
            return []
        minutes = max(1, math.floor(self.deadline_s / 60.0))
        rendered = _script_minutes(script)
        return [f"--time={minutes}"] if rendered is None or minutes < rendered else []

    # ------------------------------------------------------------------ launch
    def launch(self, bundle: Bundle, opts: LaunchOptions) -> dict[str, Any]:
        """sbatch the bundle's script. `opts.before_start` is not called: the job id comes only with
        sbatch's answer, and `abort` finds a job queued meanwhile by its name and owner comment."""
        from launcher.service import owner_id

        if bundle.flavor != SLURM_FLAVOR or bundle.script is None:
            raise EvaplanError(
                f"bundle {bundle.path} was rendered for --flavor {bundle.flavor}, not slurm",
                hint="re-render it with --flavor slurm --work-dir DIR",
            )
        folder = job_dir_of(bundle)
        checkpoints = folder / "checkpoints"
        if not (opts.resume or opts.replace) and _has_checkpoint(checkpoints):
            raise EvaplanError(
                f"{checkpoints} holds checkpoints of an earlier run of {opts.job_name}",
                hint="--resume continues from them; --replace starts over (they are moved aside)",
            )
        owner = opts.owner or owner_id()
        args = [
            "--parsable",
            f"--job-name={opts.job_name}",
            f"--comment={OWNER_COMMENT}{owner}",
            *self._time_override(bundle.script),
        ]
        nodes = int((bundle.plan.get("plan") or {}).get("nodes", 1))
        nproc = world_size_of(bundle.ds_config)
        if opts.dry_run:
            # sbatch --test-only: the controller checks the request (partition, account, limits) and
            # says when and where it would start; nothing is queued. The script comes on stdin, so
            # the job folder need not exist yet.
            said = _slurm_test_only(args, bundle.script)
            return {"work_dir": str(folder), "nproc": nproc, "notes": [said] if said else []}
        moved = None
        try:
            if opts.replace and _has_checkpoint(checkpoints):
                moved = checkpoints.with_name(f"checkpoints.replaced-{int(time.time())}")
                os.rename(checkpoints, moved)
            (folder / CONFIG_DIR_NAME).mkdir(parents=True, exist_ok=True)
            for name in ("ds_config.json", "run_config.json"):
                shutil.copyfile(bundle.path / name, folder / CONFIG_DIR_NAME / name)
            (folder / SCRIPT_FILE).write_text(bundle.script, encoding="utf-8")
        except OSError as e:
            raise RuntimeFailure(
                f"cannot write the job folder {folder}: {e.strerror}",
                hint="render with a --work-dir on a shared filesystem you can write",
            ) from None
        out = _slurm("sbatch", *args, str(folder / SCRIPT_FILE)).strip()
        job_id = out.split(";")[0]
        if not job_id.isdigit():
            raise RuntimeFailure(
                f"sbatch printed {out!r}, not a job id", hint="see the Slurm controller's log"
            )
        notes = [f"moved the earlier run's checkpoints to {moved}"] if moved else []
        return {
            "job_id": job_id,
            "owner": owner,
            "work_dir": str(folder),
            "nodes": nodes,
            "nproc": nproc,
            "metrics_path": str(Path(bundle.run_config.output_dir) / bundle.run_config.metrics_file),
            "grace_s": _signal_lead_s(bundle.script),
            "deadline_s": self.deadline_s,
            "notes": notes,
        }

    # ------------------------------------------------------------------ status
    def state(self, record: Any) -> JobState:
        d = record.backend_data
        info = _job_info(str(d["job_id"]))
        if info is None:
            phase = record.last_phase if record.last_phase in TERMINAL_PHASES else UNKNOWN
            return JobState(
                phase=phase,
                message=f"Slurm no longer knows job {d['job_id']} (it forgets ended jobs after MinJobAge); "
                f"last seen {record.last_phase}",
                started_at=record.started_at,
                finished_at=record.finished_at,
            )
        slurm_state = info.get("JobState", "")
        phase = _STATES.get(slurm_state, UNKNOWN)
        reason = info.get("Reason", "None")
        exit_code = info.get("ExitCode", "0:0")
        message = None
        why = None
        if phase == PENDING:
            code = reason.split(",")[0]
            why = f"{reason}: {_PENDING_REASONS[code]}" if code in _PENDING_REASONS else reason
            if code == "None":  # between a requeue and the scheduler's next pass
                why = "waiting for the scheduler"
            if restarts := int(info.get("Restarts", "0") or 0):
                why = f"requeued {restarts}×; {why}"
            if slurm_state != "PENDING":
                why = f"{slurm_state}: {why}"
            down = _down_nodes()  # a waiting job's most common cause, and Slurm's reason rarely names it
            if down:
                why = f"{why}; {'; '.join(down)}"
            message = why
        elif phase in (FAILED, STOPPED) and (end := self._trainer_end(record)) is not None:
            # The trainer's own account wins over the exit code (torchrun exits 1 on SIGTERM): it
            # checkpointed on SIGTERM ("preempted") before Slurm's time limit, or at `evaplan stop`.
            phase = STOPPED
            stopped = (Path(d["work_dir"]) / f"{STOP_MARKER}{d['job_id']}").is_file()
            why = (
                "Stopped: `evaplan stop`" if stopped else "TimeLimit: Slurm's --signal before the time limit"
            )
            message = (
                f"{why}; the trainer checkpointed step {end.get('step')} on SIGTERM; "
                "`evaplan launch --resume` continues from it"
            )
        elif slurm_state in _END_REASONS:
            why = _END_REASONS[slurm_state]
            message = f"{why} (exit {exit_code})"
        elif phase == FAILED:
            why = f"exit {exit_code}"
            message = f"Slurm job {d['job_id']} {slurm_state.lower()} ({why}); see `evaplan logs`"
        elif phase == STOPPED:
            message = "cancelled (scancel)"
        restarts = int(info.get("Restarts", "0") or 0)
        nodes = self._node_names(info)
        nproc = int(d.get("nproc", 1))
        per_node = max(1, nproc // max(1, int(d.get("nodes", 1))))
        ranks = [
            RankState(
                rank=r,
                name=f"{record.name}/rank{r}",
                phase=phase,
                reason=why if phase != RUNNING else None,
                restarts=restarts,
                node=nodes[r // per_node] if r // per_node < len(nodes) else None,
            )
            for r in range(nproc)
        ]
        started = _slurm_time(info.get("StartTime")) if phase != PENDING else None
        finished = _slurm_time(info.get("EndTime")) if phase in TERMINAL_PHASES else None
        return JobState(
            phase=phase,
            ranks=ranks,
            message=message,
            started_at=started or record.started_at,
            finished_at=finished,
        )

    @staticmethod
    def _trainer_end(record: Any) -> dict[str, Any] | None:
        """The trainer's last run's `end` event when it says it stopped on SIGTERM (evaclip/trainer.py:
        status "preempted" after its checkpoint), else None."""
        where = record.backend_data.get("metrics_path")
        path = Path(where) if isinstance(where, str) else None
        if path is None or not path.is_file():
            return None
        end = None
        for line in _tail_lines(path, 40):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("event") in ("start", "end"):
                end = rec if rec["event"] == "end" else None
        return end if end is not None and end.get("status") == "preempted" else None

    @staticmethod
    def _node_names(info: dict[str, str]) -> list[str]:
        nodelist = info.get("NodeList", "")
        if not nodelist or nodelist == "(null)":
            return []
        return _slurm("scontrol", "show", "hostnames", nodelist).split()

    # ------------------------------------------------------------------ logs and metrics
    def _outputs(self, record: Any) -> list[Path]:
        """The job folder's slurm-<id>.out files, oldest job first (a resume submits a new job)."""
        folder = Path(record.backend_data["work_dir"])
        found = [
            (int(m.group(1)), p)
            for p in folder.glob("slurm-*.out")
            if (m := re.fullmatch(r"slurm-(\d+)\.out", p.name))
        ]
        return [p for _, p in sorted(found)]

    def logs(self, record: Any, *, follow: bool, tail: int | None, rank: int | None) -> Iterator[LogLine]:
        wanted = (lambda ll: ll.rank == rank) if rank is not None else (lambda ll: True)

        def read(paths: list[Path]) -> Iterator[LogLine]:
            for path in paths:
                with open(path, encoding="utf-8", errors="replace") as f:
                    for x in f:
                        ll = _parse_log_line(x)
                        if wanted(ll):
                            yield ll

        files = self._outputs(record)
        lines: Iterator[LogLine] = read(files)
        if tail is not None:
            lines = iter(deque(lines, maxlen=tail))
        yield from lines
        if not follow:
            return
        current = str(record.backend_data["job_id"])
        path = Path(record.backend_data["work_dir"]) / f"slurm-{current}.out"
        offset = path.stat().st_size if path.is_file() else 0
        while True:
            ended = self.state(record).phase in TERMINAL_PHASES
            if path.is_file() and path.stat().st_size > offset:
                with open(path, encoding="utf-8", errors="replace") as f:
                    f.seek(offset)
                    chunk = f.read()
                keep = chunk if ended else chunk[: chunk.rfind("\n") + 1]
                offset += len(keep.encode("utf-8", errors="replace"))
                for x in keep.splitlines():
                    ll = _parse_log_line(x)
                    if wanted(ll):
                        yield ll
            if ended:
                return
            time.sleep(FOLLOW_POLL_S)

    def recent_metrics(self, record: Any, n: int = METRICS_WINDOW) -> list[dict[str, Any]]:
        return metrics_in_file(record.backend_data.get("metrics_path"), n)

    # ------------------------------------------------------------------ stop
    def abort(self, record: Any) -> list[str]:
        """After a launch cut short between sbatch and the job store (a signal, a kill, a full store):
        cancel what it may have queued, found by the job's name and this store's owner comment, as
        the record has no job id; returns the ids still queued (none, normally)."""
        from launcher.service import owner_id

        owner = record.backend_data.get("owner") or owner_id()
        for job_id in _jobs_named(record.name, owner):
            _slurm("scancel", job_id)
        return []

    def stop_unfinished(self, record: Any) -> list[str]:
        """A launch killed after sbatch answered: its stop finds the job by name and owner comment."""
        self.stop(record)
        return []

    def stop(self, record: Any) -> None:
        """SIGTERM to the job's steps (the trainer checkpoints and exits), wait up to the script's
        signal lead for the job to end, then cancel it; only a job carrying this store's owner comment
        and the record's name is touched."""
        d = record.backend_data
        job_id = str(d.get("job_id", ""))
        if not job_id.isdigit():
            self.abort(record)  # a launch that never recorded its job id: found by name and owner
            return
        info = _job_info(job_id)
        if info is None or _STATES.get(info.get("JobState", ""), UNKNOWN) in TERMINAL_PHASES:
            return
        if info.get("Comment") != f"{OWNER_COMMENT}{d.get('owner')}" or info.get("JobName") != record.name:
            raise RuntimeFailure(
                f"Slurm job {job_id} is not the job '{record.name}' this store launched "
                f"(name {info.get('JobName')!r}, comment {info.get('Comment')!r}); left alone",
                hint="cancel it yourself with scancel if it is yours",
            )
        if _STATES.get(info.get("JobState", "")) == RUNNING:
            try:  # how `status` tells this stop from the time limit's signal
                (Path(d["work_dir"]) / f"{STOP_MARKER}{job_id}").write_text("")
            except OSError:
                pass
            _slurm("scancel", "--signal=TERM", job_id)
            grace_s = float(d.get("grace_s") or 0) or 60.0
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                info = _job_info(job_id)
                if info is None or _STATES.get(info.get("JobState", ""), UNKNOWN) in TERMINAL_PHASES:
                    return
                time.sleep(STOP_POLL_S)
            _slurm("scancel", job_id)
            raise RuntimeFailure(
                f"job '{record.name}' (Slurm job {job_id}) did not exit within {grace_s:.0f} s of SIGTERM; "
                "cancelled it (no checkpoint guaranteed)",
                hint="see `evaplan logs`",
            )
        _slurm("scancel", job_id)  # pending: nothing to checkpoint


def _jobs_named(name: str, owner: str) -> list[str]:
    """The ids of the pending or running jobs of that name that carry this owner's comment (squeue
    lists only live jobs; %k is the comment, squeue(1))."""
    out = _slurm("squeue", "--noheader", f"--name={name}", "--format=%i|%k")
    ids = []
    for line in out.splitlines():
        job_id, _, comment = line.strip().partition("|")
        if job_id.isdigit() and comment == f"{OWNER_COMMENT}{owner}":
            ids.append(job_id)
    return ids


def _slurm_test_only(args: list[str], script: str) -> str:
    """sbatch --test-only's verdict ('Job N to start at T using C processors on nodes X in partition P')."""
    p = _run("sbatch", "--test-only", *[a for a in args if a != "--parsable"], stdin=script)
    said = (p.stderr or p.stdout).strip()
    if p.returncode != 0:
        err = _slurm_error("sbatch", said)
        down = _down_nodes() if "node configuration" in said else []
        if down:  # Slurm says only "not available": say which nodes are out and why
            raise EvaplanError(
                f"{err.message}; {'; '.join(down)}", hint="wait for the nodes, or ask the admins"
            )
        raise err
    return re.sub(r"^sbatch: ", "", said.splitlines()[-1]) if said else ""
