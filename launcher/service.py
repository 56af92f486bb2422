"""The launcher service: one object owns each job's life, and the commands only parse and print.

In the way TorchX's `Runner` owns a job for its `cancel`/`status` commands, `JobService` does
every step that must happen in order and be undone together:

    validate the bundle (digests, kinds, namespace, pod policy; manifest_check.py)
    → record the intent in the job store (phase "Creating") before the cluster changes
    → create the objects, each labelled with the job and this store's owner id
    → record the job ("Submitted")
    → monitor (status/watch: phase, ranks, spend from pod run time; the budget guard)
    → stop: delete every object carrying the job's and owner's labels.

Because objects are found by label, not by the replies to their creates, an interrupted launch
(a lost reply, SIGTERM, SIGKILL of the CLI) leaves nothing `list` cannot show and `stop` cannot
remove. The budget holds without any monitor: the workload's activeDeadlineSeconds is set from
budget ÷ price at launch (flavours.py says where each flavour keeps it).
"""

from __future__ import annotations

import math
import os
import re
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from launcher.backends.base import (
    STOPPED,
    TERMINAL_PHASES,
    Backend,
    Bundle,
    JobState,
    LaunchOptions,
    LogLine,
    backend_class,
    backend_for,
    started_anything,
)
from launcher.backends.interrupts import terminate_as_interrupt as _terminate_as_interrupt
from launcher.files import create_once
from launcher.monitor import CostBasis, compute_progress, cost_basis, elapsed_s, snapshot
from launcher.state import JobChanged, JobRecord, JobStore, StoreError, state_dir, utcnow
from planner.errors import EvaplanError, RuntimeFailure

OWNER_FILE = "owner-id"
_OWNER_RE = re.compile(r"[a-f0-9]{20}")
CREATING = "Creating"  # intent recorded, objects being created
SUBMITTED = "Submitted"


def owner_id(root: Path | None = None) -> str:
    """This job store's owner id: 20 random hex digits kept in <state dir>/owner-id, made once.

    Every object a launch creates carries it as the label evaplan.io/owner, and `--replace`,
    `stop` and a failed launch's clean-up delete only objects that carry it."""
    root = root or state_dir()
    path = root / OWNER_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as e:
        raise EvaplanError(f"cannot read the owner id {path}: {e}", hint="fix or remove that file") from None
    if text is not None:
        if not _OWNER_RE.fullmatch(text):
            raise EvaplanError(
                f"the owner id in {path} is not 20 hex digits",
                hint="restore it from a backup; a new id would not own the jobs this store launched",
            )
        return text
    create_once(path, secrets.token_hex(10) + "\n", "the owner id")  # first launches agree on one id
    return owner_id(root)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class LaunchRequest:
    bundle: Bundle
    backend: str = "kubernetes"
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    replace: bool = False
    resume: bool = False
    max_cost_usd: float | None = None
    pricing: str | None = None
    force: bool = False
    bundle_dir: Path | None = None  # where the bundle is kept, when not where it was read


@dataclass(frozen=True)
class DryRunResult:
    """What a launch would do; nothing was created or recorded."""

    job: str
    backend: str
    namespace: str | None
    preflight: list[dict[str, Any]]
    accepted: list[str]  # objects the API server accepted with dryRun=All
    deadline_s: int | None  # the in-cluster deadline the budget sets
    notices: list[str] = field(default_factory=list)
    nproc: int | None = None
    work_dir: str | None = None


@dataclass(frozen=True)
class LaunchResult:
    record: JobRecord
    basis: CostBasis
    preflight: list[dict[str, Any]]
    deadline_s: int | None
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StopResult:
    job: str
    backend: str
    had_finished: str | None  # the phase it had reached, when it had ended before the stop
    removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobRow:
    record: JobRecord
    phase: str
    step: int | None
    spent_usd: float | None


@dataclass(frozen=True)
class _Checked:
    """A launch that passed `precheck`: the request and what the checks found, from which the
    backend's options and the job's record are made."""

    req: LaunchRequest
    basis: CostBasis
    previous: JobRecord | None
    budget: float | None
    deadline_s: int | None
    prior_node_s: float  # node-seconds the job's earlier runs were billed

    def options(self, owner: str | None = None) -> LaunchOptions:
        req = self.req
        return LaunchOptions(
            job_name=req.bundle.job_name, replace=req.replace, resume=req.resume, owner=owner
        )

    def record(self, data: dict[str, Any], phase: str) -> JobRecord:
        """The job's record with the backend's `data`, in `phase`."""
        req, basis, previous = self.req, self.basis, self.previous
        now = utcnow()
        kind = backend_class(req.backend)
        return JobRecord(
            name=req.bundle.job_name,
            backend=req.backend,
            bundle_dir=str((req.bundle_dir or req.bundle.path).resolve()),
            plan={
                "cost_basis": basis.to_dict(),
                "prior_elapsed_s": self.prior_node_s / basis.nodes if basis.nodes else 0.0,
            },
            estimate=req.bundle.plan,
            namespace=kind.record_namespace(data),
            max_cost_usd=self.budget,
            created_at=previous.created_at if previous is not None and req.resume else now,
            started_at=now if kind.clock_starts_at_launch else None,
            last_phase=phase,
            backend_data=data,
        )


# --------------------------------------------------------------------------- the service
class JobService:
    """Launch, list, status, logs and stop of the jobs in one job store."""

    def __init__(
        self, store: JobStore | None = None, *, kubeconfig: str | None = None, context: str | None = None
    ) -> None:
        self.warnings: list[str] = []  # what the last list_rows() skipped, for the command to print
        self.store = store or JobStore()
        # The cluster the user names (--kubeconfig/--context) instead of the one a job recorded.
        self.kubeconfig, self.context = kubeconfig, context

    def backend_of(self, record: JobRecord) -> Backend:
        """The backend of a stored job, on the cluster it was launched on (or the one the user named)."""
        return backend_for(record, self.kubeconfig, self.context)

    # ------------------------------------------------------------------ launch
    def precheck(
        self, req: LaunchRequest
    ) -> tuple[CostBasis, JobRecord | None, float | None, int | None, float]:
        """Every check that needs no change anywhere: the bundle is what evaplan rendered, the
        name is free (or --replace/--resume fit), the budget is sane. Returns the cost basis, the
        previous record, the budget, the in-cluster deadline and the node-seconds already billed."""
        bundle, name = req.bundle, req.bundle.job_name
        if req.replace and req.resume:
            raise EvaplanError("--replace starts over and --resume continues", hint="pass one of them")
        backend_class(req.backend).check_bundle(bundle, req.namespace)
        basis = cost_basis(bundle, req.pricing)
        previous = self.store.find(name)
        self._check_previous(req, previous)
        prior_node_s = 0.0
        if previous is not None and req.resume:
            prior_node_s = elapsed_s(previous, _stored_state(previous)) * basis.nodes
        budget = req.max_cost_usd
        if budget is None and previous is not None and req.resume:
            budget = previous.max_cost_usd
        deadline_s = self._check_budget(
            req, basis, budget, prior_node_s / basis.nodes if basis.nodes else 0.0
        )
        return basis, previous, budget, deadline_s, prior_node_s

    def launch(self, req: LaunchRequest, *, dry_run: bool = False) -> LaunchResult | DryRunResult:
        """Validate, record the intent, create labelled objects, record the job (or, with
        `dry_run`, every check including the API server's dryRun=All, and nothing else)."""
        checked = _Checked(req, *self.precheck(req))
        be = backend_class(req.backend).for_launch(
            kubeconfig=req.kubeconfig, context=req.context, namespace=req.namespace
        )
        if be.labels_objects:
            return self._launch_labelled(checked, be, dry_run)
        return self._launch_supervised(checked, be, dry_run)

    def _check_previous(self, req: LaunchRequest, previous: JobRecord | None) -> None:
        name = req.bundle.job_name
        if previous is None:
            if req.resume:
                raise EvaplanError(f"no job named '{name}' to resume", hint="launch it without --resume")
            return
        if not (req.replace or req.resume):
            raise EvaplanError(
                f"a job named '{name}' was launched already ({previous.backend}, "
                f"{previous.created_at:%Y-%m-%d %H:%M} UTC, last seen {previous.last_phase})",
                hint="pass --replace to start over, --resume to continue it, or render with another --job-name",
            )
        if previous.last_phase == CREATING and _launcher_alive(previous):
            raise EvaplanError(
                f"job '{name}' is being launched right now (pid {previous.backend_data.get('launcher_pid')})",
                hint=f"wait for that launch to end, then `evaplan status {name}`",
            )
        if previous.backend != req.backend:
            raise EvaplanError(
                f"job '{name}' ran on the {previous.backend} backend",
                hint=f"pass --backend {previous.backend}",
            )
        if req.resume and (previous.last_phase != CREATING or _may_run(previous)):
            if self.backend_of(previous).state(previous).phase not in TERMINAL_PHASES:
                raise EvaplanError(
                    f"job '{name}' is still running", hint=f"`evaplan stop {name}` first, then --resume"
                )

    def _check_budget(
        self, req: LaunchRequest, basis: CostBasis, budget: float | None, prior_elapsed_s: float
    ) -> int | None:
        """The in-cluster deadline (seconds of running) the budget buys; refuses a budget below
        the job's own estimate unless forced."""
        if budget is None:
            return None
        if basis.usd_per_node_hour is None:
            raise EvaplanError(
                "--max-cost needs a price, and the plan has no offering",
                hint="render from a plan with --offering NAME",
            )
        if (
            req.max_cost_usd is not None
            and basis.estimate_usd is not None
            and req.max_cost_usd < basis.estimate_usd
            and not req.force
        ):
            raise EvaplanError(
                f"--max-cost ${req.max_cost_usd:,.2f} is below this job's own estimate ${basis.estimate_usd:,.2f} "
                f"({basis.pricing}), so the budget guard would stop it before it finishes",
                hint="raise --max-cost, or pass --force to run until the budget is spent",
            )
        left_s = budget_deadline_s(budget, basis.usd_per_node_hour, basis.nodes, prior_elapsed_s)
        if left_s is None:
            return None  # a free run (the cpu profile's price is 0): nothing for a deadline to guard
        if left_s < 1:
            if prior_elapsed_s > 0:
                raise EvaplanError(
                    f"the budget {_usd(budget)} is already spent by this job's earlier runs "
                    f"({prior_elapsed_s:,.0f} s of running at {basis.nodes} node(s) × "
                    f"{_usd(basis.usd_per_node_hour)}/node-hour)",
                    hint="pass a larger --max-cost",
                )
            raise EvaplanError(
                f"the budget {_usd(budget)} buys less than one second of running at {basis.nodes} node(s) × "
                f"{_usd(basis.usd_per_node_hour)}/node-hour",
                # one second's price, rounded up to a whole cent so that it does buy one
                hint=f"pass a --max-cost of at least ${math.ceil(basis.nodes * basis.usd_per_node_hour / 36.0) / 100:,.2f}",
            )
        return math.floor(left_s)

    def _launch_labelled(self, c: _Checked, be: Backend, dry_run: bool) -> LaunchResult | DryRunResult:
        """A backend that labels what it creates (Backend.labels_objects): the intent is recorded
        when the first create is about to happen; a failed launch is forgotten once the backend
        finds nothing of it left (its rollback worked)."""
        req, name = c.req, c.req.bundle.job_name
        opts = c.options(owner=owner_id(self.store.root))
        be.set_deadline(c.deadline_s)  # the workload's own deadline: the cluster enforces the budget
        if dry_run:
            data = be.launch(req.bundle, replace(opts, dry_run=True))
            return DryRunResult(
                job=name,
                backend=req.backend,
                namespace=data.get("namespace"),
                preflight=list(be.preflight_report),
                accepted=data.get("dry_run_objects", []),
                deadline_s=c.deadline_s,
                notices=list(be.notices),
            )
        intent: list[JobRecord] = []

        def record_intent(data: dict[str, Any]) -> None:
            rec = c.record({**data, **_launcher_pid()}, CREATING)
            self.store.put_if(rec, c.previous)  # a second launch of the name is refused here
            intent.append(rec)

        try:
            with _terminate_as_interrupt():
                data = be.launch(req.bundle, replace(opts, before_start=record_intent))
        except BaseException:
            if intent:
                self._undo(be, intent[0], c.previous)
            raise
        record = c.record(data, SUBMITTED)
        try:
            self.store.put(record)
        except EvaplanError as e:
            raise RuntimeFailure(
                f"job '{name}' was created in namespace {record.namespace} but recording it failed: {e.message}",
                hint=f"its launch intent is in the store: `evaplan list` shows it and `evaplan stop {name}` removes it",
            ) from None
        return LaunchResult(
            record=record,
            basis=c.basis,
            preflight=list(be.preflight_report),
            deadline_s=c.deadline_s,
            notices=list(be.notices),
        )

    def _launch_supervised(self, c: _Checked, be: Backend, dry_run: bool) -> LaunchResult | DryRunResult:
        """A backend whose job is processes it supervises (local torchrun, a Slurm batch job): the
        intent is recorded before `launch` and completed with the job's handles (`before_start`);
        a failed launch is aborted, then forgotten when nothing of it survives."""
        req, previous, opts = c.req, c.previous, c.options()
        if dry_run:
            data = be.launch(req.bundle, replace(opts, dry_run=True))
            return DryRunResult(
                job=opts.job_name,
                backend=req.backend,
                namespace=None,
                preflight=[],
                accepted=[],
                deadline_s=None,
                nproc=data.get("nproc"),
                work_dir=data.get("work_dir"),
                notices=list(data.get("notes", [])),
            )
        # The backend's own checks (paths confined to the state dir, ranks, live processes) before
        # anything changes: a refused launch leaves the store and the previous job as they were.
        be.launch(req.bundle, replace(opts, dry_run=True))
        if previous is not None and req.replace and previous.last_phase != CREATING:
            be.stop(previous)  # its work folder is about to be removed: end the processes first
        intent = [c.record(_launcher_pid(), CREATING)]
        self.store.put_if(intent[0], previous)  # a second launch of the name is refused here

        def record_intent(data: dict[str, Any]) -> None:
            # The job's launch id and folder, before any process of it starts: a launch killed
            # from here on leaves a job that `status` shows and `stop` ends by that label.
            rec = c.record({**data, **_launcher_pid()}, CREATING)
            self.store.put_if(rec, intent[0])
            intent[0] = rec

        be.set_deadline(c.deadline_s)  # the backend enforces the budget with no monitor running
        with _terminate_as_interrupt():
            try:
                data = be.launch(req.bundle, replace(opts, before_start=record_intent))
            except BaseException:
                self._undo(be, intent[0], previous)
                raise
        record = c.record(data, SUBMITTED)
        try:
            self.store.put(record)
        except EvaplanError as e:
            be.stop(record)  # a local job the store cannot record would run unmanaged: end it again
            raise RuntimeFailure(f"{e.message}; the local job was stopped again", hint=e.hint) from None
        return LaunchResult(
            record=record,
            basis=c.basis,
            preflight=[],
            deadline_s=c.deadline_s,
            notices=list(data.get("notes", [])),
        )

    def _undo(self, be: Backend, intent: JobRecord, previous: JobRecord | None) -> None:
        """After a failed or interrupted launch: the backend ends whatever it started (Backend.abort),
        then the previous record is put back (or the job forgotten). If something of it survives,
        the intent stays: `list` shows it and `stop` ends it."""
        try:
            survivors = be.abort(intent)
        except EvaplanError:
            return
        if not survivors:
            self._restore(intent.name, previous)

    def _restore(self, name: str, previous: JobRecord | None) -> None:
        """Put the job's previous record back, or forget a job that had none (best effort)."""
        try:
            if previous is not None:
                self.store.put(previous)
            else:
                self.store.delete(name)
        except EvaplanError:
            pass

    # ------------------------------------------------------------------ monitor
    def get(self, name: str | None) -> tuple[JobRecord, Backend]:
        record = self.store.get(name)
        return record, self.backend_of(record)

    def watchable(self, name: str | None) -> tuple[JobRecord, Backend]:
        """The job and its backend for status/watch; a launch interrupted before anything was
        started has nothing to watch (one line saying so)."""
        record, be = self.get(name)
        if record.last_phase == CREATING and not started_anything(record):
            state = "still being launched" if _launcher_alive(record) else "interrupted while launching"
            raise EvaplanError(
                f"job '{record.name}' was {state}; nothing of it was started",
                hint=f"`evaplan stop {record.name}` marks it stopped (removing anything it created), "
                "or launch it again with --replace",
            )
        return record, be

    def remember(self, record: JobRecord, state: JobState) -> JobRecord:
        """Keep the phase, start, end and billed run time the backend reports; returns the record."""
        stored_node_s = float(record.plan.get("run_node_s", 0.0))
        grew = state.run_node_s is not None and state.run_node_s >= stored_node_s + 1.0
        if (
            state.phase != record.last_phase
            or (state.finished_at and not record.finished_at)
            or (state.started_at and not record.started_at)
            or grew
        ):
            plan = dict(record.plan)
            if grew:
                plan["run_node_s"] = state.run_node_s
            phase = state.phase
            if record.last_phase == CREATING and not state.ranks and phase not in TERMINAL_PHASES:
                phase = record.last_phase  # an interrupted launch stays visible as such
            seen = record
            record = record.with_(
                last_phase=phase,
                finished_at=state.finished_at or record.finished_at,
                started_at=record.started_at or state.started_at,
                plan=plan,
            )
            # A cache of the backend's truth (a read-only store still works), written only over the
            # row this view was read from: a `stop` recorded meanwhile is never overwritten.
            try:
                self.store.put_if(record, seen)
            except JobChanged:
                return self.latest(seen)
            except StoreError:
                pass
        return record

    def latest(self, record: JobRecord) -> JobRecord:
        """The job's record as stored now (the one given, if the store no longer has it)."""
        try:
            return self.store.find(record.name) or record
        except StoreError:
            return record

    def list_rows(self) -> list[JobRow]:
        """Every job in the store, newest first, with its live phase (jobs whose launch was
        interrupted included, as "creating (interrupted)")."""
        rows = []
        records = self.store.all()
        self.warnings = [
            f"skipped an unreadable job row {bad} in {self.store.path}" for bad in self.store.skipped
        ]
        for rec in records:
            phase, step = rec.last_phase, None
            try:
                spent = compute_progress(rec, _stored_state(rec), []).spent_usd
            except (KeyError, TypeError, ValueError) as e:  # a row without a usable cost basis
                self.warnings.append(
                    f"skipped job row {rec.name!r}: no usable cost basis ({e!r}) in {self.store.path}"
                )
                continue
            if rec.last_phase == CREATING and (_launcher_alive(rec) or not _may_run(rec)):
                phase = "creating" if _launcher_alive(rec) else "creating (interrupted)"
                rows.append(JobRow(rec, phase, None, spent))
                continue
            if rec.last_phase not in TERMINAL_PHASES:
                try:
                    state, prog = snapshot(self.backend_of(rec), rec)
                    phase, step, spent = state.phase, prog.step, prog.spent_usd
                    if prog.past_budget:
                        phase += " (PAST ITS BUDGET)"
                    self.remember(rec, state)
                except EvaplanError as e:
                    phase = f"{rec.last_phase} (unreachable: {e.message[:60]})"
            rows.append(JobRow(rec, phase, step, spent))
        return rows

    # ------------------------------------------------------------------ logs
    def logs(
        self, name: str | None, *, follow: bool, tail: int | None, rank: int | None
    ) -> tuple[Backend, Iterator[LogLine]]:
        record, be = self.get(name)
        if rank is not None:
            n = be.rank_count(record)
            if n is not None and rank >= n:
                raise EvaplanError(
                    f"job '{record.name}' has {n} rank{'s' if n != 1 else ''} (0-{n - 1}); there is no rank {rank}",
                    hint="`evaplan status` lists the ranks",
                )
        return be, be.logs(record, follow=follow, tail=tail, rank=rank)

    # ------------------------------------------------------------------ stop
    def stop(self, name: str | None) -> StopResult:
        """Stop a job and delete everything it created; a job that had ended is only cleaned up."""
        record, be = self.get(name)
        removed: list[str] = []
        if record.last_phase == CREATING:
            removed = be.stop_unfinished(record)  # a launch interrupted before it was recorded
            _record_stop(
                self.store,
                be,
                record.with_(last_phase=STOPPED, finished_at=record.finished_at or utcnow()),
                removed,
            )
            return StopResult(record.name, record.backend, None, removed)
        try:
            state = be.state(record)
        except RuntimeFailure:
            state = None  # unreachable now: delete anyway, by name and label
        if state is not None:
            record = self.remember(record, state)
        finished = state.phase if state is not None and state.phase in TERMINAL_PHASES else None
        if finished is None or be.cleans_up_finished:
            be.stop(record)
        end = record.finished_at or (state.finished_at if state else None) or utcnow()
        if finished:  # the backend's own truth, cached: a read-only store does not stop the clean-up
            self.store.remember(record.with_(last_phase=finished, finished_at=end))
        else:
            _record_stop(self.store, be, record.with_(last_phase=STOPPED, finished_at=end), removed)
        return StopResult(record.name, record.backend, finished, removed)


def _record_stop(store: JobStore, be: Backend, record: JobRecord, removed: list[str]) -> None:
    """Record a stop that has happened: if the store cannot be written, say that the job was
    stopped all the same (exit 1), so the user does not stop it again or think it still runs."""
    try:
        store.put(record)
    except StoreError as e:
        raise RuntimeFailure(
            f"stopped {record.name} ({be.stop_says}{': ' + ', '.join(removed) if removed else ''}), "
            f"but the job store could not record it: {e.message}",
            hint=f"{e.hint}; until then `evaplan status {record.name}` asks the backend and shows it ended",
        ) from None


def budget_deadline_s(
    budget_usd: float | None, usd_per_node_hour: float | None, nodes: int, prior_elapsed_s: float
) -> float | None:
    """Seconds of run time the budget still buys: (budget − spent so far) ÷ (nodes × $/node-hour);
    None without a budget or with a zero price (nothing to guard)."""
    if budget_usd is None or not usd_per_node_hour or nodes <= 0:
        return None
    rate_usd_per_s = usd_per_node_hour * nodes / 3600.0
    return max(0.0, budget_usd / rate_usd_per_s - prior_elapsed_s)


def _usd(v: float) -> str:
    """Dollars with cents, or with two significant digits below a cent (a tiny budget is not $0.00)."""
    return f"${v:,.2f}" if v >= 0.01 else f"${v:.2g}"


def _stored_state(rec: JobRecord) -> JobState:
    return JobState(phase=rec.last_phase, started_at=rec.started_at, finished_at=rec.finished_at)


def _may_run(rec: JobRecord) -> bool:
    """A launch interrupted before its record was complete may have started what its backend finds."""
    return backend_class(rec.backend).may_run_while_creating(rec)


def _launcher_pid() -> dict[str, Any]:
    return {"launcher_pid": os.getpid(), "launcher_host": socket.gethostname()}


def _launcher_alive(rec: JobRecord) -> bool:
    """Whether the `launch` that recorded this intent still runs (same host, live pid)."""
    d = rec.backend_data
    pid = d.get("launcher_pid")
    if not pid or d.get("launcher_host") != socket.gethostname() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
