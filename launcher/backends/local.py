"""The local backend: the bundled trainer under torchrun on this machine, under a supervisor.

The way to try evaplan end to end without a cluster. Layout of a job's work folder
(`<state dir>/jobs/<name>/`, the job name checked by names.py so it is one plain folder there):

    ds_config.json, run_config.json   copied from the bundle (run_config: paths confined here,
                                      checkpoint.resume set)
    supervisor-spec.json              what the supervisor runs: torchrun's argv, env, deadline
    supervisor.json                   the supervisor's record: pids, start ticks, outcome, failed rank
    job.log                           torchrun's console: every rank's lines, `[rank<N>]:` prefixed
    logs/                             torchrun --log-dir: per-rank stdout/stderr files per attempt
    exit_code                         written by the supervisor when the job has ended
    stopped                           written by `evaplan stop` before it signals
    <output_dir>/...                  the trainer's metrics and checkpoints (paths from run_config)

`launch` starts a small supervisor (local_supervisor.py) that detaches (its own session and process
group: the CLI may exit and ^C does not reach it), runs torchrun, ends stragglers and records how
the job ended. Every process of the job carries the label EVAPLAN_LOCAL_JOB=<launch id>
(local_procs.py): `status` is Running while any of them lives, and `stop` signals all of them, so a
killed torchrun or supervisor hides nothing. SIGTERM lets the trainer checkpoint before it exits.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from launcher import names
from launcher.backends import build_lock
from launcher.backends.base import (
    FAILED,
    METRICS_WINDOW,
    PENDING,
    RUNNING,
    STOPPED,
    Backend,
    Bundle,
    JobState,
    LaunchOptions,
    LogLine,
    RankState,
    parse_metrics_line,
    register,
)
from launcher.backends.build_lock import clear_stale_build_locks, extension_roots, working_in
from launcher.backends.local_procs import JOB_ENV, JobProcess, end_job, job_processes, start_ticks
from launcher.backends.local_supervisor import LOG_FILE, SPEC_FILE, STATE_FILE, rank_last_lines, read_state
from launcher.monitor import fmt_duration
from launcher.render import CHECKPOINT_MOUNT, OUTPUT_MOUNT
from launcher.state import state_dir
from planner.errors import EvaplanError, RuntimeFailure

# `--backend local`, third in its list of choices, and
# where it runs, as `--backend`'s help says (read by base.declared_backends without importing this module).
BACKEND = "local"
BACKEND_LISTED = 3
BACKEND_RUNS = "torchrun on this machine"

# torchrun prefixes each teed line with this (torch.distributed.run reads the template from
# TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE; ${rank} is the global rank).
RANK_PREFIX_TEMPLATE = "[rank${rank}]:"
# How long `stop` (and the supervisor, on SIGTERM) waits for the trainer's checkpoint and exit
# before SIGKILL.
STOP_TIMEOUT_S = 300.0
# How long the supervisor waits for stragglers (ranks still alive after torchrun ended) to exit
# on SIGTERM before SIGKILL: they have no peers left, so there is no checkpoint to wait for.
STRAGGLER_GRACE_S = 30.0
# How long an interrupted `launch` gives what it started to exit on SIGTERM before SIGKILL: the
# ranks have not trained yet, so there is no checkpoint to wait for.
ABORT_GRACE_S = 10.0
# How long `launch` waits for the supervisor to detach and report its pid (a python start-up).
SUPERVISOR_START_TIMEOUT_S = 120.0
# What torchrun starts on every rank: the bundled trainer (`python -m evaclip.train`).
TRAINER_ENTRYPOINT: tuple[str, ...] = ("-m", "evaclip.train")
SUPERVISOR_MODULE = "launcher.backends.local_supervisor"
FOLLOW_POLL_S = 0.5
# The renderer's pod mounts (launcher/render.py OUTPUT_MOUNT, CHECKPOINT_MOUNT): locally, folders
# of the same name in the job's work folder. Any other absolute path in a bundle is refused.
MOUNTS = {OUTPUT_MOUNT: OUTPUT_MOUNT.strip("/"), CHECKPOINT_MOUNT: CHECKPOINT_MOUNT.strip("/")}


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
    if micro <= 0 or accum <= 0 or tbs <= 0 or tbs % (micro * accum):
        raise EvaplanError(
            f"ds_config.json: train_batch_size {tbs} is not micro {micro} × accum {accum} × a whole world size",
            hint="re-render the bundle",
        )
    return tbs // (micro * accum)


# ---------------------------------------------------------------------- the work folder, confined
def work_dir_for(job_name: str) -> Path:
    """<state dir>/jobs/<job name>: the job name is checked again (a bundle is untrusted), so the
    folder is always one plain child of jobs/."""
    names.check_dns1035_label(job_name, "job name")
    work = jobs_dir() / job_name
    if work.is_symlink():
        raise EvaplanError(
            f"local job folder {work} is a symbolic link", hint="remove the link; evaplan owns that folder"
        )
    return work


def _remove_work(work: Path) -> None:
    """Delete a job's work folder, and only if it is one: a real folder directly in jobs/."""
    jobs = jobs_dir().resolve()
    if work.is_symlink() or not work.is_dir() or work.resolve().parent != jobs:
        raise EvaplanError(
            f"refusing to delete {work}: it is not a job folder inside {jobs}",
            hint="remove it yourself if it is yours",
        )
    shutil.rmtree(work)


def _confined(work: Path, value: Any, what: str, base: str | None = None) -> str:
    """A path from run_config.json as a relative path inside the work folder (under `base`, a
    relative folder there, when the trainer resolves it from there). The renderer's pod mounts
    map to folders of the same name; any other absolute path, a `..`, or a symbolic link that
    leads outside is refused."""
    if not isinstance(value, str) or not value.strip():
        raise EvaplanError(f"run_config.json: {what} is empty", hint="re-render the bundle")
    p = PurePosixPath(MOUNTS.get(value, value))
    refuse = "re-render the bundle; a local job writes only inside its work folder"
    if p.is_absolute():
        raise EvaplanError(
            f"run_config.json: {what} {value!r} is an absolute path (only the pod mounts "
            f"{', '.join(sorted(MOUNTS))} are, and they map to folders of the job)",
            hint=refuse,
        )
    if ".." in p.parts or "\x00" in value:
        raise EvaplanError(f"run_config.json: {what} {value!r} climbs out of the job folder", hint=refuse)
    root = work.resolve()
    target = (work / (base or ".") / p).resolve()  # follows any symbolic link already there
    if target != root and root not in target.parents:
        raise EvaplanError(
            f"run_config.json: {what} {value!r} leads outside {work} (to {target})", hint=refuse
        )
    return p.as_posix()


def local_run_config(run_config: dict[str, Any], work: Path, resume: bool) -> dict[str, Any]:
    """The bundle's run_config with every path it writes confined to the work folder."""
    out = dict(run_config)
    out["output_dir"] = _confined(work, out.get("output_dir", "out"), "output_dir")
    metrics = out.get("metrics_file", "metrics.jsonl")
    if not isinstance(metrics, str) or "/" in metrics or metrics in ("", ".", ".."):
        raise EvaplanError(
            f"run_config.json: metrics_file {metrics!r} is not a file name", hint="re-render the bundle"
        )
    ckpt = dict(out.get("checkpoint") or {})
    # The trainer resolves a relative checkpoint folder from output_dir (evaclip/train.py).
    ckpt["dir"] = _confined(work, ckpt.get("dir", "checkpoints"), "checkpoint.dir", base=out["output_dir"])
    ckpt["resume"] = bool(resume)
    out["checkpoint"] = ckpt
    return out


def _building_op(procs: list[JobProcess]) -> str | None:
    """The op a process of the job is compiling (its working folder holds build.ninja), if any."""
    for p in procs:
        if p.cwd and (Path(p.cwd) / "build.ninja").is_file():
            return Path(p.cwd).name
    return None


# The image of a local run is never pulled (torchrun runs this checkout's evaclip): a placeholder.
LOCAL_IMAGE = "evaclip:local"
LOCAL_HARDWARE = (
    "cpu"  # profiles/hardware/cpu.yaml: this kind of machine, measured by benchmarks/measure_cpu.py
)
LOCAL_RANKS = 2  # two CPU ranks (gloo): the smallest world that exercises every ZeRO collective


def _ranks_on_this_machine(bundle: Bundle) -> int:
    """The bundle's world size, once torch is importable and this machine can run that many
    ranks on its one node (as CPU processes, or one GPU each)."""
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
    return nproc


@register
class LocalBackend(Backend):
    name = BACKEND
    clock_starts_at_launch = True
    stop_announcement = "each of its processes"
    plans_on_this_machine = True
    refuses_kube_flags = True

    @classmethod
    def complete_render_flags(cls, given: dict[str, Any]) -> None:
        if not given.get("image"):
            given["image"] = LOCAL_IMAGE
        if not given.get("plan_file"):
            # On this machine the "GPUs" are CPU ranks: default to the bundled `cpu` profile with two
            # ranks (gloo), so `evaplan launch --backend local --model eva-clip-debug` runs as it reads.
            if not given.get("offering_name"):
                given.setdefault("hardware_name", LOCAL_HARDWARE)
            if not (given.get("gpus") or given.get("nodes")):
                given["gpus"] = LOCAL_RANKS

    @classmethod
    def budget_enforcement(cls, deadline_s: int) -> str:
        return (
            f"budget enforced by the job's supervisor on this machine: the job stops after "
            f"{fmt_duration(deadline_s)} of running, and at once if the supervisor dies"
        )

    def __init__(
        self,
        python: str | None = None,
        stop_timeout_s: float | None = None,
        entrypoint: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        self.python = python or sys.executable
        self.stop_timeout_s = STOP_TIMEOUT_S if stop_timeout_s is None else stop_timeout_s
        self.entrypoint = entrypoint or TRAINER_ENTRYPOINT

    @classmethod
    def may_run_while_creating(cls, record: Any) -> bool:
        """Its processes carry the launch id, recorded before any of them starts."""
        return "launch_id" in record.backend_data

    def set_deadline(self, deadline_s: float | None) -> None:
        """The supervisor stops the job `deadline_s` seconds after it starts (budget ÷ price)."""
        self.deadline_s = deadline_s

    # ------------------------------------------------------------------ launch
    def launch(self, bundle: Bundle, opts: LaunchOptions) -> dict[str, Any]:
        """Check, write the work folder, then start the supervisor. `opts.before_start(data)` gets
        the job's handles (launch id, work folder) before any process starts: the service records
        them first, so a launch killed while the supervisor starts leaves a job `status` and `stop`
        find. `opts.owner` is not needed: the job's processes carry its launch id, which is this store's."""
        nproc = _ranks_on_this_machine(bundle)
        # Every check before anything is written or deleted.
        job_name, work = opts.job_name, work_dir_for(opts.job_name)
        run_config = local_run_config(bundle.run_config.model_dump(mode="json"), work, opts.resume)
        if work.exists() and not (opts.replace or opts.resume):
            raise EvaplanError(f"local job folder {work} exists", hint="pass --replace or --resume")
        earlier = read_state(work).get("launch_id") if work.is_dir() else None
        living = job_processes(earlier) if isinstance(earlier, str) else []
        if living and not (opts.dry_run and opts.replace):  # --replace stops them first (commands/launch.py)
            raise EvaplanError(
                f"{len(living)} process(es) of job '{job_name}' still run (pids "
                f"{', '.join(str(p.pid) for p in living[:8])})",
                hint=f"`evaplan stop {job_name}` first",
            )
        notes = clear_stale_build_locks(dry_run=opts.dry_run)
        if opts.dry_run:
            return {"work_dir": str(work), "nproc": nproc, "notes": notes}
        launch_id = uuid.uuid4().hex
        torchrun = self._write_work(bundle, opts, work, run_config, nproc, launch_id)
        metrics = work / run_config["output_dir"] / run_config.get("metrics_file", "metrics.jsonl")
        data: dict[str, Any] = {
            "launch_id": launch_id,
            "work_dir": str(work),
            "nproc": nproc,
            "metrics_path": str(metrics),
            "command": torchrun,
            "deadline_s": self.deadline_s,
            "notes": notes,
        }
        if opts.before_start is not None:
            opts.before_start(data)
        pid = self._start_supervisor(work, launch_id)
        # the supervisor: leader of the job's session and process group
        return {**data, "pid": pid, "pgid": pid, "pid_start_ticks": start_ticks(pid)}

    def _write_work(
        self,
        bundle: Bundle,
        opts: LaunchOptions,
        work: Path,
        run_config: dict[str, Any],
        nproc: int,
        launch_id: str,
    ) -> list[str]:
        """The job's work folder as the supervisor reads it (configs, the spec with torchrun's
        command line and environment, the log's header); returns that command line."""
        try:
            if work.exists() and opts.replace and not opts.resume:
                _remove_work(work)
            work.mkdir(parents=True, exist_ok=True)
            for stale in ("exit_code", "stopped", STATE_FILE):
                (work / stale).unlink(missing_ok=True)
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
            env = {"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX_TEMPLATE, "PYTHONUNBUFFERED": "1"}
            if "OMP_NUM_THREADS" not in os.environ:
                env["OMP_NUM_THREADS"] = "1"
            env.update(bundle.env)  # the user's --env, their last word as in the pods
            _write_json(  # 0600: it holds the --env values
                work / SPEC_FILE,
                {
                    "launch_id": launch_id,
                    "argv": torchrun,
                    "env": env,
                    "deadline_s": self.deadline_s,
                    "grace_s": self.stop_timeout_s,
                    "straggler_grace_s": STRAGGLER_GRACE_S,
                    "torch_extensions_roots": [str(r) for r in extension_roots()],
                    "lock_quiet_s": build_lock.QUIET_S,
                },
            )
            with open(work / LOG_FILE, "ab") as log:
                log.write(
                    f"# evaplan: {'resume' if opts.resume else 'launch'} {datetime.now(timezone.utc).isoformat()}: "
                    f"{shlex.join(torchrun)}\n".encode()
                )
        except OSError as e:
            raise RuntimeFailure(
                f"cannot write the local job folder {work}: {e.strerror}",
                hint="set EVAPLAN_STATE_DIR to a writable folder with free space",
            ) from None
        return torchrun

    def _start_supervisor(self, work: Path, launch_id: str) -> int:
        env = {**os.environ, JOB_ENV: launch_id, "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.run(
                [self.python, "-m", SUPERVISOR_MODULE, str(work)],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=SUPERVISOR_START_TIMEOUT_S,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            end_job(launch_id, 5.0)
            raise RuntimeFailure(
                f"the local supervisor did not start within {SUPERVISOR_START_TIMEOUT_S:.0f}s",
                hint="the machine may be overloaded; launch it again",
            ) from None
        first = proc.stdout.strip().splitlines()[:1]
        if proc.returncode != 0 or not first or not first[0].isdigit():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeFailure(
                f"the local supervisor failed to start: {tail}", hint=f"see {work / LOG_FILE}"
            )
        return int(first[0])

    # ------------------------------------------------------------------ status
    def _work(self, record: Any) -> Path:
        return Path(record.backend_data["work_dir"])

    def _live(self, record: Any) -> list[JobProcess]:
        launch_id = record.backend_data.get("launch_id")
        return job_processes(launch_id) if isinstance(launch_id, str) else []

    def state(self, record: Any) -> JobState:
        d = record.backend_data
        work = self._work(record)
        nproc = int(d.get("nproc", 1))
        sup = read_state(work)
        live = self._live(record)
        if sup.get("finished_at"):
            # The supervisor records the outcome after torchrun and every rank have ended, then exits: in
            # that last moment it alone still runs, and the job is over (anything else alive still counts).
            live = [p for p in live if p.pid != int(d.get("pid", -1))]
        node = os.uname().nodename
        activity = None
        if live:
            # Truth is what runs: a job is Running while any process of it lives, whatever was recorded.
            phase, finished = RUNNING, None
            msg = None
            if sup.get("stopping"):
                msg = f"stopping: {sup['stopping']}"
            elif not any(p.pid == int(d.get("pid", -1)) for p in live):
                msg = (
                    f"the supervisor is gone (killed?) but {len(live)} process(es) of the job still run; "
                    "`evaplan stop` ends them"
                )
            op = _building_op(live)
            if op:
                activity = f"building DeepSpeed CPU op {op} (the first local run compiles it: minutes)"
            ranks_alive = {p.rank for p in live if p.rank is not None}
            ranks = [
                RankState(
                    rank=r,
                    name=f"{record.name}/rank{r}",
                    phase=RUNNING if r in ranks_alive else PENDING,
                    reason=None if r in ranks_alive else "NotStarted",
                    node=node,
                    restarts=self._restarts(work),
                )
                for r in range(nproc)
            ]
            return JobState(
                phase=phase,
                ranks=ranks,
                message=msg,
                started_at=record.started_at,
                finished_at=finished,
                activity=activity,
            )
        if sup.get("finished_at"):
            phase = str(sup.get("phase") or FAILED)
            msg = sup.get("message") or None
            finished = _parse_time(sup.get("finished_at"))
        elif (work / "stopped").is_file():
            phase, msg, finished = STOPPED, "stopped by `evaplan stop`", _mtime(work / "stopped")
        elif sup.get("supervisor_pid"):
            # The supervisor died without recording an outcome (SIGKILL): the kernel sent torchrun
            # SIGTERM with it (local_supervisor.py, PR_SET_PDEATHSIG), so the job stopped too.
            phase = STOPPED
            msg = (
                "its supervisor died (was it killed?) and the job was stopped with it (SIGTERM to every rank)"
            )
            finished = _mtime(work / LOG_FILE)  # its last sign of life: spend stops there
        else:
            phase = FAILED
            msg = "nothing of the job runs and its supervisor recorded no outcome (was it killed?)"
            finished = _mtime(work / LOG_FILE)  # its last sign of life: spend stops there
        failed_rank = sup.get("failed_rank")
        last = rank_last_lines(work) if phase == FAILED else {}
        restarts = self._restarts(work)

        def rank_state(r: int) -> RankState:
            reason = message = None
            if phase == FAILED and failed_rank == r:  # the rank that died first, and why
                reason = str(sup.get("failed_rank_reason") or "Error")
                message = (last.get(r) or "")[:200] or None
            elif phase == FAILED:
                reason = f"rank {failed_rank} failed" if failed_rank is not None else "Error"
            return RankState(r, f"{record.name}/rank{r}", phase, reason, message, restarts, node)

        return JobState(
            phase=phase,
            ranks=[rank_state(r) for r in range(nproc)],
            message=msg,
            started_at=record.started_at,
            finished_at=finished,
        )

    @staticmethod
    def _restarts(work: Path) -> int:
        attempts = list((work / "logs").glob("*/*/attempt_*")) if (work / "logs").is_dir() else []
        return max(0, len({a.name for a in attempts}) - 1)

    # ------------------------------------------------------------------ logs and metrics
    def logs(self, record: Any, *, follow: bool, tail: int | None, rank: int | None) -> Iterator[LogLine]:
        nproc = int(record.backend_data.get("nproc", 1))
        if rank is not None and not 0 <= rank < nproc:
            raise EvaplanError(
                f"job '{record.name}' has ranks 0-{nproc - 1}, not {rank}", hint=f"pass --rank 0..{nproc - 1}"
            )
        path = self._work(record) / LOG_FILE
        if not path.is_file():
            raise RuntimeFailure(
                f"job '{record.name}' has no log at {path}", hint="was its work folder removed?"
            )
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
                if not self._live(record):
                    rest = f.read()
                    for x in (partial + rest).splitlines():
                        ll = _parse_log_line(x)
                        if wanted(ll):
                            yield ll
                    return
                time.sleep(FOLLOW_POLL_S)

    def recent_metrics(self, record: Any, n: int = METRICS_WINDOW) -> list[dict[str, Any]]:
        return metrics_in_file(record.backend_data.get("metrics_path"), n)

    # ------------------------------------------------------------------ stop
    def abort(self, record: Any) -> list[int]:
        """End at once whatever a launch that did not finish started (SIGTERM, a short grace for
        the processes to exit, SIGKILL); returns the pids still alive after that (none, normally)."""
        launch_id = record.backend_data.get("launch_id")
        if not isinstance(launch_id, str):
            return []
        _killed, left = end_job(launch_id, ABORT_GRACE_S)
        return [p.pid for p in left]

    def stop(self, record: Any) -> None:
        """SIGTERM to every process of the job (the supervisor, torchrun, each rank: found by label,
        not by parentage, so a killed supervisor or torchrun hides nothing); wait for the
        checkpoint and exit; SIGKILL what is left after the grace period; confirm nothing lives."""
        launch_id = record.backend_data.get("launch_id")
        if not isinstance(launch_id, str) or not job_processes(launch_id):
            return  # nothing of it runs: nothing to signal (and never a pid that is someone else's now)
        work = self._work(record)
        if work.is_dir():
            try:
                (work / "stopped").write_text(datetime.now(timezone.utc).isoformat() + "\n")
            except OSError:
                pass  # the marker only words the outcome; a full disk must not keep the job running
        # Op folders the job is compiling in (ninja runs in the op's folder): the lock there is
        # this job's, and it would outlive the build it guards (measured: SIGTERM during the first
        # build of deepspeed_shm_comm left it).
        building = {
            Path(p.cwd) for p in job_processes(launch_id) if p.cwd and (Path(p.cwd) / "lock").is_file()
        }
        killed, left = end_job(launch_id, self.stop_timeout_s)
        notes = []
        for op_dir in sorted(building):
            if not left and not working_in(op_dir):
                try:
                    (op_dir / "lock").unlink()
                    notes.append(
                        f"removed the DeepSpeed op build lock {op_dir / 'lock'} its stopped build left"
                    )
                except OSError:
                    pass
        if notes and work.is_dir():
            try:
                with open(work / LOG_FILE, "a", encoding="utf-8") as log:
                    log.writelines(f"# evaplan stop: {n}\n" for n in notes)
            except OSError:
                pass  # a note in the log, not worth failing the stop for
        if left:
            raise RuntimeFailure(
                f"job '{record.name}': {len(left)} process(es) survived SIGKILL (pids {[p.pid for p in left]})",
                hint="they are stuck in the kernel; check them with `ps`",
            )
        if killed:
            raise RuntimeFailure(
                f"job '{record.name}' did not exit within {self.stop_timeout_s:.0f}s of SIGTERM; "
                f"killed {len(killed)} process(es) (no checkpoint guaranteed)",
                hint="see `evaplan logs`",
            )


def metrics_in_file(where: Any, n: int = METRICS_WINDOW) -> list[dict[str, Any]]:
    """The newest `n` step records of a trainer's metrics.jsonl at `where` (a path this machine
    sees: the local work folder, or a Slurm job's folder on the shared filesystem)."""
    path = Path(where) if isinstance(where, str) else None
    if path is None or not path.is_file():
        return []
    # Step records plus the few other events between them (start, checkpoint, end).
    recs = [r for r in (parse_metrics_line(x) for x in _tail_lines(path, 2 * n + 10)) if r is not None]
    return recs[-n:]


def kill_job(launch_id: str) -> None:
    """SIGKILL every process of a job now (tests' clean-up; `stop` is the graceful way)."""
    end_job(launch_id, 0.0)


def _parse_time(t: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(t) if isinstance(t, str) else None
    except ValueError:
        return None


def _mtime(p: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(p.stat().st_mtime, timezone.utc)
    except OSError:
        return None


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
    """Written whole (a temporary file renamed over it), readable by the user only."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
