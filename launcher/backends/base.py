"""One interface for every place a job can run: what `launch`, `status`, `logs` and `stop` call.

A backend takes a rendered bundle (the dry-run artifact: ds_config.json, run_config.json,
manifests.yaml, plan.json) and turns it into a running job; it reports the job's phase and each
rank's state, streams every rank's log, reads the trainer's latest metrics record and stops the
job. Nothing here imports kubernetes or torch: backends load those lazily.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

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
class LogLine:
    rank: int | None  # None: the launcher/agent itself
    text: str


class Backend(ABC):
    """Where jobs run. Implementations: kubernetes, slurm, local."""

    name: str

    @abstractmethod
    def launch(
        self, bundle: Bundle, *, job_name: str, replace: bool, resume: bool, dry_run: bool = False
    ) -> dict[str, Any]:
        """Preflight, then start the job; returns backend data to keep in the job record. With
        `dry_run`, every check runs (Kubernetes: server-side dry run too) and nothing starts."""

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

    def set_deadline(self, deadline_s: float | None) -> None:
        """Have the job stop itself `deadline_s` seconds after it starts (budget ÷ price), with no
        monitor running. Call before `launch`; backends that cannot enforce one ignore it."""
        self.deadline_s = deadline_s


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


def get_backend(name: str, **options: Any) -> Backend:
    """The backend called `name`, loading its dependencies only now."""
    if name == "kubernetes":
        from launcher.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(**options)
    if name == "local":
        from launcher.backends.local import LocalBackend

        return LocalBackend(**options)
    if name == "slurm":
        from launcher.backends.slurm import SlurmBackend

        return SlurmBackend(**options)
    raise EvaplanError(
        f"unknown backend '{name}'", hint="use --backend kubernetes, --backend slurm or --backend local"
    )


def backend_for(record: Any, kubeconfig: str | None = None, context: str | None = None) -> Backend:
    """The backend a stored job was launched with, configured as it was (kubeconfig, context,
    namespace). `kubeconfig`/`context` given by the user replace the recorded ones; otherwise a
    recorded context whose API server is not the one the job was launched on is refused: acting
    on another cluster would report a stop that stopped nothing."""
    if record.backend != "kubernetes":
        return get_backend(record.backend)
    d = record.backend_data
    told = kubeconfig is not None or context is not None
    be = get_backend(
        "kubernetes",
        kubeconfig=kubeconfig if kubeconfig is not None else d.get("kubeconfig"),
        # As kubectl reads them: --kubeconfig alone means that file's current context.
        context=context if told else d.get("context"),
        namespace=record.namespace,
    )
    server = d.get("server")
    now = getattr(getattr(be, "api", None), "server", None)
    if server and not told and now != server:
        raise EvaplanError(
            f"job '{record.name}' was launched on the cluster at {server} (context {d.get('context')}), but "
            f"that context of {d.get('kubeconfig') or 'the default kubeconfig'} now points at {now}",
            hint=f"pass --kubeconfig FILE --context NAME of the cluster at {server}",
        )
    return be
