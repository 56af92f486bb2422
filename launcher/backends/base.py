"""One interface for every place a job can run: what `launch`, `status`, `logs` and `stop` call.

A backend takes a rendered bundle (the dry-run artifact: ds_config.json, run_config.json,
manifests.yaml, plan.json) and turns it into a running job; it reports the job's phase and each
rank's state, streams every rank's log, reads the trainer's latest metrics record and stops the
job. Nothing here imports kubernetes or torch: backends load those lazily.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from launcher.bundle import Bundle, read_bundle
from planner.errors import EvaplanError

# Phases a job can be in, whatever the backend (Kubernetes Job/PyTorchJob/JobSet conditions and
# local process states are mapped onto these).
PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED, UNKNOWN = (
    "Pending",
    "Running",
    "Succeeded",
    "Failed",
    "Stopped",
    "Unknown",
)
TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED, STOPPED})
# The label of one launch (a random id per `launch`) on every object it creates, beside the job's
# and the owner's: a failed launch's rollback deletes what it created and nothing another launch
# of the same job created.
LAUNCH_LABEL = "evaplan.io/launch"
# Step records the throughput (and so the ETA) is averaged over: one step's rate is noisy.
METRICS_WINDOW = 20


def load_bundle(path: str | Path) -> Bundle:
    """The rendered bundle at `path` (launcher.bundle: the renderer's reader and checks)."""
    return read_bundle(path)


@dataclass(frozen=True)
class RankState:
    """One rank's worker (a pod, or a local process group member) and why it is not running."""

    rank: int
    name: str
    phase: str
    reason: str | None = None
    message: str | None = None
    restarts: int = 0
    node: str | None = None


@dataclass(frozen=True)
class JobState:
    """A job's phase, its ranks, and since when it has been running (for cost)."""

    phase: str
    ranks: list[RankState] = field(default_factory=list)
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Node-seconds billed so far from the workers' own run time (Kubernetes: containers' running
    # intervals, so queued time costs nothing); None: bill from started_at to finished_at or now.
    run_node_s: float | None = None
    # What the job is doing before its first step, when the backend can tell (e.g. "building
    # DeepSpeed CPU op cpu_adam"); `status` shows it instead of "no metrics yet".
    activity: str | None = None


@dataclass(frozen=True)
class LaunchOptions:
    """What one `launch` asks of a backend besides the bundle: one object, so that every backend
    takes the same options and a new option touches this class and the backends that use it."""

    job_name: str
    replace: bool = False  # a job of the same name is removed first
    resume: bool = False  # the trainer continues from the job's checkpoint
    # Every check runs (Kubernetes: the server-side dry run too) and nothing starts.
    dry_run: bool = False
    # Gets the job's handles before anything of it starts, when the backend knows them then.
    before_start: Callable[[dict[str, Any]], None] | None = None
    # The job store's owner id, which what the job creates carries where the backend can label
    # it (None: the default store's).
    owner: str | None = None


@dataclass(frozen=True)
class LogLine:
    rank: int | None  # None: the launcher/agent itself
    text: str


class Backend(ABC):
    """Where jobs run. Each implementation lives in one module of launcher/backends that
    registers it (@register); the launcher service calls only what is declared here."""

    name: ClassVar[str]
    # The backend creates cluster objects that carry the job's, the owner's and the launch's
    # labels: the service labels them, and records the launch intent when the first create is
    # about to happen (`before_start` of `launch`); otherwise the intent is recorded before
    # `launch` and completed by `before_start` with the job's handles.
    labels_objects: ClassVar[bool] = False
    # A job's record starts its clock at launch (the processes start at once), not when the
    # backend first reports it running.
    clock_starts_at_launch: ClassVar[bool] = False
    # What is left of a finished job must still be removed by `stop` (Kubernetes keeps a
    # finished workload's objects and pods until they are deleted).
    cleans_up_finished: ClassVar[bool] = False
    # How `stop` says what it did, for a stop the job store could not record.
    stop_says: ClassVar[str] = "its processes were ended"
    # A create cut short by a second signal may still land: a failed launch keeps its intent.
    create_in_doubt: bool = False
    # How `stop` announces a stop that waits for the checkpoint (None: it says nothing first).
    stop_announcement: ClassVar[str | None] = None
    # What `launch` renders for this backend: the flavour it runs (None: a Kubernetes flavour) and
    # that flavour's evaplan.toml settings, which go into the render as they do for `render`.
    render_flavor: ClassVar[str | None] = None
    render_config_params: ClassVar[tuple[str, ...]] = ()
    # The job plans on and runs on this machine: the config file's offering does not apply.
    plans_on_this_machine: ClassVar[bool] = False
    # --kubeconfig/--context name a cluster this backend never reaches: refused, not ignored.
    refuses_kube_flags: ClassVar[bool] = False
    namespace: str | None = None  # a cluster backend's namespace (the context's, or -n)

    def __init__(self) -> None:
        self.deadline_s: float | None = None
        # One-line notices for the user (a skipped preflight, a forbidden watch), each said once,
        # and the log streams that ended early (`logs` exits 1).
        self.notices: list[str] = []
        self.log_problems: list[str] = []
        # The preflight's rows (node, resource, free/allocatable) of the last launch, when it has one.
        self.preflight_report: list[dict[str, Any]] = []

    @classmethod
    def for_launch(
        cls, *, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
    ) -> Backend:
        """The backend a launch uses; only a cluster backend reads `kubeconfig`/`context`/`namespace`."""
        return cls()

    @classmethod
    def from_record(cls, record: Any, kubeconfig: str | None = None, context: str | None = None) -> Backend:
        """The backend a stored job was launched with, configured as it was."""
        return cls()

    @classmethod
    def check_bundle(cls, bundle: Bundle, namespace: str | None) -> None:
        """Checks of the rendered bundle that need no change anywhere (none by default)."""
        return None

    @classmethod
    def complete_render_flags(cls, given: dict[str, Any]) -> None:
        """Fill in (or demand) the render flags `launch` needs for this backend."""
        if cls.render_flavor:
            given.setdefault("flavor", cls.render_flavor)

    @classmethod
    def place(cls, record: Any) -> str:
        """Where the job runs, as `launch` says it (its work folder, by default)."""
        return str(record.backend_data.get("work_dir"))

    @classmethod
    @abstractmethod
    def budget_enforcement(cls, deadline_s: int) -> str:
        """How the budget's deadline is enforced with no monitor running, in one line."""

    @classmethod
    def record_namespace(cls, data: dict[str, Any]) -> str | None:
        """The namespace a job record keeps, from `launch`'s data (only a cluster has one)."""
        return None

    @classmethod
    def may_run_while_creating(cls, record: Any) -> bool:
        """Whether a launch interrupted before its record was complete may have started
        processes the backend can find (so `list` asks the backend, not the record)."""
        return False

    @abstractmethod
    def launch(self, bundle: Bundle, opts: LaunchOptions) -> dict[str, Any]:
        """Preflight, then start the job as `opts` asks; returns backend data to keep in the job
        record (LaunchOptions says what each option means)."""

    @abstractmethod
    def abort(self, record: Any) -> list[Any]:
        """After a launch that did not finish: end what it started; returns what survives (none,
        normally: the service then forgets the launch)."""

    @abstractmethod
    def state(self, record: Any) -> JobState:
        """The job's phase and each rank's state, now."""

    @abstractmethod
    def logs(self, record: Any, *, follow: bool, tail: int | None, rank: int | None) -> Iterator[LogLine]:
        """Every rank's log merged (or one rank's); with follow, until the job ends or ^C."""

    @abstractmethod
    def recent_metrics(self, record: Any, n: int = METRICS_WINDOW) -> list[dict[str, Any]]:
        """The trainer's newest step records (oldest first, at most `n`); [] before the first step."""

    @abstractmethod
    def stop(self, record: Any) -> None:
        """Stop the job so that the trainer checkpoints (SIGTERM), and remove what it created."""

    def stop_unfinished(self, record: Any) -> list[str]:
        """`stop` of a job whose launch never completed: end what it started, when its record says
        it started something; returns what was removed (kind/name), when the backend can tell."""
        if started_anything(record):
            self.stop(record)
        return []

    def rank_count(self, record: Any) -> int | None:
        """How many ranks the job has (for `logs --rank`), when the record says."""
        n = record.backend_data.get("nproc")
        return int(n) if n else None

    def set_deadline(self, deadline_s: float | None) -> None:
        """Have the job stop itself `deadline_s` seconds after it starts (budget ÷ price), with no
        monitor running. Call before `launch`."""
        self.deadline_s = deadline_s


def started_anything(rec: Any) -> bool:
    """Whether a launch got as far as starting something the backend can find: a Kubernetes
    workload recorded, or a local job's launch id (its processes carry it)."""
    d = rec.backend_data
    return "workload" in d or "launch_id" in d or "pid" in d


def parse_metrics_line(line: str) -> dict[str, Any] | None:
    """A trainer step record from one line: a metrics.jsonl line (`{"event": "step", ...}`, see
    evaclip/metrics.py), possibly after a log prefix; other events and other lines give None."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        rec = json.loads(line[start:])
    except json.JSONDecodeError:
        return None
    if (
        isinstance(rec, dict)
        and rec.get("event", "step") == "step"
        and "step" in rec
        and "samples_seen" in rec
    ):
        return rec
    return None


# The trainer's rank-0 progress line (evaclip.metrics.progress_line):
# "step     12/120 | loss 4.1234 | lr 1.000e-03 |      52.3 samples/s | ..."
_PROGRESS_LINE = re.compile(r"step\s+(\d+)/(\d+) \| loss (\S+) \| lr \S+ \|\s+([0-9.]+) samples/s")


def parse_progress_line(line: str, global_batch: int) -> dict[str, Any] | None:
    """A step record from the trainer's stdout progress line (how a pod's progress is read
    without access to its metrics file); samples_seen = step × global batch, as the trainer counts."""
    m = _PROGRESS_LINE.search(line)
    if not m:
        return None
    step = int(m.group(1))
    return {
        "step": step,
        "samples_seen": step * global_batch,
        "samples_per_s": float(m.group(4)),
        "loss": float(m.group(3)) if m.group(3) != "nan" else None,
    }


# name -> class: each backend module registers its class with @register when it is imported.
# A backend module also declares its name at module level (`BACKEND = "name"`,
# `BACKEND_LISTED = n`, its place in `--backend`'s list, and optionally `BACKEND_RUNS = "where"`
# for `--backend`'s help), which `declared_backends` reads from the package's files without
# importing any: `--backend`'s choices and help cost `plan` or `render` no
# backend's dependencies, `backend_class` imports only the module of the backend asked for, and a
# new backend joins by adding one module.
_REGISTRY: dict[str, type[Backend]] = {}
B = TypeVar("B", bound="type[Backend]")
_DECLARED = re.compile(
    r'^BACKEND = "([a-z][a-z0-9-]*)"\nBACKEND_LISTED = (\d+)(?:\nBACKEND_RUNS = "([^"\n]+)")?$', re.M
)


def register(cls: B) -> B:
    """Class decorator: make a backend reachable as `--backend <cls.name>`."""
    _REGISTRY[cls.name] = cls
    return cls


def declared_backends() -> dict[str, str]:
    """Backend name -> module of launcher.backends, in `--backend`'s order (BACKEND_LISTED, then
    name): the package's modules whose source declares `BACKEND`, read, not imported."""
    return {d.name: d.module for d in _declarations()}


@dataclass(frozen=True)
class _Declared:
    listed: int
    name: str
    module: str
    runs: str | None  # where the backend runs, for `--backend`'s help


def _declarations() -> list[_Declared]:
    import launcher.backends as package

    found: list[_Declared] = []
    for mod in pkgutil.iter_modules(package.__path__):
        source = Path(getattr(mod.module_finder, "path", "")) / f"{mod.name}.py"
        if mod.ispkg or not source.is_file():
            continue
        m = _DECLARED.search(source.read_text(encoding="utf-8"))
        if m:
            found.append(_Declared(int(m.group(2)), m.group(1), mod.name, m.group(3)))
    return sorted(found, key=lambda d: (d.listed, d.name))


def backend_help() -> str:
    """`--backend`'s help: where each declared backend runs (BACKEND_RUNS, else its name), in
    the listed order."""
    runs = [d.runs or d.name for d in _declarations()]
    where = (
        runs[0] if len(runs) == 1 else f"{', '.join(runs[:-1])}{',' if len(runs) > 2 else ''} or {runs[-1]}"
    )
    return f"Where to run: {where}."


def backend_choices() -> list[str]:
    """`--backend`'s choices, in their listed order."""
    return list(declared_backends())


def backend_names() -> list[str]:
    """Every backend the launcher ships, as `--backend` spells them, by name."""
    return sorted(declared_backends())


def backend_class(name: str) -> type[Backend]:
    """The class of the backend called `name`, importing its module (and dependencies) only now."""
    if name not in _REGISTRY:
        module = declared_backends().get(name)
        if module is not None:
            importlib.import_module(f"launcher.backends.{module}")
    if name not in _REGISTRY:
        names = [f"--backend {n}" for n in backend_names()]
        raise EvaplanError(
            f"unknown backend '{name}'", hint="use " + " or ".join([", ".join(names[:-1]), names[-1]])
        )
    return _REGISTRY[name]


def get_backend(name: str, **options: Any) -> Backend:
    """The backend called `name`, loading its dependencies only now."""
    return backend_class(name)(**options)


def backend_for(record: Any, kubeconfig: str | None = None, context: str | None = None) -> Backend:
    """The backend a stored job was launched with, configured as it was (Backend.from_record)."""
    return backend_class(record.backend).from_record(record, kubeconfig, context)
