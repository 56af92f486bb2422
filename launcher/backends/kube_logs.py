"""The Kubernetes backend's logs: every rank's pod log merged by kubelet timestamp (or followed
live, reopening a dropped stream while the pod runs), and rank 0's newest step records read from it."""

from __future__ import annotations

import heapq
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from launcher.backends.base import METRICS_WINDOW, LogLine, parse_metrics_line, parse_progress_line
from launcher.backends.kube_api import ApiError, KubeApi, one_line
from launcher.backends.kube_pods import pod_problem
from planner.errors import EvaplanError

LOG_METRICS_TAIL_LINES = 200
FOLLOW_START_POLL_S = 2.0  # how often `logs -f` re-checks a pod whose container has not started
# `logs -f` reopens a dropped stream of a running pod this many times in a row (waiting
# FOLLOW_START_POLL_S × n, at most LOG_RECONNECT_CAP_S) before it says it stopped following.
LOG_RECONNECTS = 5
LOG_RECONNECT_CAP_S = 10.0

_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)? (.*)$", re.S)


def split_timestamp(line: str) -> tuple[str, str]:
    """`2026-11-27T10:00:00.123456789Z text` → (sortable UTC key, text); kubelet timestamps=true."""
    m = _TS.match(line)
    if not m:
        return "", line
    frac = (m.group(2) or ".0")[1:].ljust(9, "0")[:9]
    return f"{m.group(1)}.{frac}", m.group(4)


class _StreamPosition:
    """Where a pod's log stream got to, so that a reopened stream (`sinceTime`, second resolution)
    shows no line twice: the last kubelet timestamp shown and how many lines carried it."""

    def __init__(self) -> None:
        self.last_key, self.at_last, self.shown = "", 0, 0
        self.drops = 0  # reopenings in a row that brought no line
        self.replayed = self.new_lines = 0  # of the current opening

    def reopen(self) -> None:
        self.replayed = self.new_lines = 0

    def is_new(self, key: str) -> bool:
        """Whether a line with this timestamp key is one not shown yet (and so counted shown)."""
        if self.last_key and key and key <= self.last_key:
            if key < self.last_key:
                return False  # before where we were
            self.replayed += 1
            if self.replayed <= self.at_last:
                return False
        if key == self.last_key:
            self.at_last += 1
        elif key:
            self.last_key, self.at_last = key, 1
        self.shown += 1
        self.new_lines += 1
        self.drops = 0
        return True


class KubeLogs:
    """Logs and metrics of a job's pods, for KubernetesBackend (launcher/backends/kubernetes.py),
    which provides `api`, `namespace`, `log_problems` and `_pods` (launcher/backends/kube_state.py)."""

    api: KubeApi
    namespace: str | None
    log_problems: list[str]
    _pods: Callable[[Any], list[tuple[int, dict[str, Any]]]]

    def _container(self, pod: dict[str, Any]) -> str | None:
        names = [c.get("name") for c in pod.get("spec", {}).get("containers", [])]
        if "pytorch" in names:  # the PyTorchJob's container name (PyTorchJobDefaultContainerName)
            return "pytorch"
        return names[0] if names else None

    def _pod_lines(
        self,
        rank: int,
        pod: dict[str, Any],
        follow: bool,
        tail: int | None,
        timestamps: bool = True,
        total_s: float | None = None,
    ) -> Iterator[tuple[str, int, str]]:
        """One pod's log lines. A stream that drops is reopened where it stopped (kubelet
        timestamps: `sinceTime`, and lines already shown skipped) while following and the pod
        runs; otherwise the drop is said in one line and remembered in `log_problems`."""
        import urllib3

        name = pod["metadata"]["name"]
        ns = pod["metadata"].get("namespace") or self.namespace
        path = f"/api/v1/namespaces/{ns}/pods/{name}/log"
        announced, reopened, at = False, False, _StreamPosition()
        while True:
            query = {
                "container": self._container(pod),
                "follow": follow or None,
                "tailLines": tail if not at.last_key else None,
                "timestamps": timestamps or None,
                "sinceTime": _rfc3339(at.last_key) if at.last_key else None,
            }
            at.reopen()
            try:
                for key, text in self._api_lines(path, query, follow, timestamps, total_s):
                    if at.is_new(key):
                        yield key, rank, text
                if not follow or (reopened and not at.new_lines):
                    return  # the container exited (a reopened stream that ends at once says so too)
                dropped = None  # the server ended the stream: the container exited, or a proxy cut it
            except (urllib3.exceptions.HTTPError, ConnectionError, OSError, ApiError) as e:
                dropped = one_line(e)
            except EvaplanError as e:
                reason, _ = pod_problem(pod)
                if not (follow and pod.get("status", {}).get("phase") == "Pending" and reason is None):
                    yield "", rank, f"(no log from {name}: {reason or e.message})"
                    return
                # Following a pod whose container has not started (400 "waiting to start"): wait.
                if not announced:
                    yield "", rank, f"(waiting for {name} to start)"
                    announced = True
                time.sleep(FOLLOW_START_POLL_S)
                fresh = self.api.get(self.api.resource("v1", "Pod"), name, ns)
                if fresh is None:
                    yield "", rank, f"(pod {name} is gone)"
                    return
                pod = fresh
                continue
            if dropped is not None and not follow:
                self.log_problems.append(
                    f"the log of rank {rank} ({name}) broke off after {at.shown} lines: {dropped}"
                )
                yield "", rank, f"(log stream of {name} dropped after {at.shown} lines: {dropped})"
                return
            # Following: reopen while the pod still runs.
            fresh, dropped = self._still_running(name, ns, dropped)
            at.drops += 1
            said = self._why_not_reopened(rank, name, fresh, dropped, at.drops)
            if said is not None:
                if said:
                    yield "", rank, said
                return
            if dropped is not None:
                yield "", rank, f"(log stream of {name} dropped: {dropped}; reconnecting)"
            pod, reopened = fresh, True
            time.sleep(min(LOG_RECONNECT_CAP_S, FOLLOW_START_POLL_S * at.drops))

    def _api_lines(
        self, path: str, query: dict[str, Any], follow: bool, timestamps: bool, total_s: float | None
    ) -> Iterator[tuple[str, str]]:
        """One opening of a pod's log stream: (kubelet timestamp key, text) per line."""
        for line in self.api.stream_lines(path, query, timeout_s=None if follow else 60.0, total_s=total_s):
            yield split_timestamp(line) if timestamps else ("", line)

    def _still_running(
        self, name: str, ns: str, dropped: str | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The pod now, when it still runs (else None), and why its stream dropped."""
        try:
            fresh = self.api.get(self.api.resource("v1", "Pod"), name, ns)
        except (ApiError, EvaplanError) as e:
            fresh, dropped = None, dropped or one_line(e)
        if fresh is not None and fresh.get("status", {}).get("phase") != "Running":
            fresh = None
        return fresh, dropped

    def _why_not_reopened(
        self, rank: int, name: str, fresh: dict[str, Any] | None, dropped: str | None, drops: int
    ) -> str | None:
        """None: reopen the followed stream; else the line that says why not ("" for none), the
        problem kept in `log_problems`."""
        if fresh is None:
            if dropped is None:
                return ""
            self.log_problems.append(f"the log of rank {rank} ({name}) stopped: {dropped}")
            return f"(log stream of {name} dropped and the pod no longer runs: {dropped})"
        if drops > LOG_RECONNECTS:
            self.log_problems.append(f"the log of rank {rank} ({name}) kept dropping: {dropped}")
            return f"(log stream of {name} dropped {LOG_RECONNECTS} times in a row; stopped following)"
        return None

    def logs(self, record: Any, *, follow: bool, tail: int | None, rank: int | None) -> Iterator[LogLine]:
        pods = [(r, p) for r, p in self._pods(record) if rank is None or r == rank]
        if rank is not None and not pods:
            raise EvaplanError(
                f"job '{record.name}' has no pod for rank {rank}", hint="`evaplan status` lists the ranks"
            )
        if not follow:
            # A k-way merge by kubelet timestamp: one pending line per pod in memory.
            for _, r, text in heapq.merge(
                *(self._pod_lines(r, p, False, tail) for r, p in pods), key=lambda t: t[0]
            ):
                yield LogLine(rank=r, text=text)
            return
        yield from _follow_merged([self._pod_lines(r, p, True, tail) for r, p in pods])

    def recent_metrics(self, record: Any, n: int = METRICS_WINDOW) -> list[dict[str, Any]]:
        """Rank 0's newest step records from its log: the trainer's progress lines (or JSON metrics
        lines, if an image prints those); the pod's metrics file is not reachable from here."""
        pods = self._pods(record)
        if not pods:
            return []
        batch = int(record.plan["cost_basis"]["global_batch"])
        recent: deque[dict[str, Any]] = deque(maxlen=n)
        for _, _, text in self._pod_lines(  # `status` reads it: within one call budget, body included
            pods[0][0],
            pods[0][1],
            False,
            LOG_METRICS_TAIL_LINES,
            timestamps=False,
            total_s=self.api.call_budget_s,
        ):
            rec = parse_metrics_line(text) or parse_progress_line(text, batch)
            if rec is not None:
                recent.append(rec)
        return list(recent)


def _rfc3339(key: str) -> str:
    """A split_timestamp key back to RFC 3339 at second resolution (`sinceTime` takes seconds)."""
    return key.split(".")[0] + "Z"


def _follow_merged(streams: list[Iterator[tuple[str, int, str]]]) -> Iterator[LogLine]:
    """Interleave live streams as lines arrive (one reader thread per pod, a bounded queue)."""
    q: queue.Queue[tuple[int, str] | None] = queue.Queue(maxsize=1000)

    def pump(it: Iterator[tuple[str, int, str]]) -> None:
        try:
            for _, r, text in it:
                q.put((r, text))
        finally:
            q.put(None)

    for it in streams:
        threading.Thread(target=pump, args=(it,), daemon=True).start()
    open_streams = len(streams)
    while open_streams:
        item = q.get()
        if item is None:
            open_streams -= 1
            continue
        yield LogLine(rank=item[0], text=item[1])
