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
        announced = False
        # Where the stream got to: the last kubelet timestamp shown and how many lines carried it.
        last_key, at_last, shown, drops, reopened = "", 0, 0, 0, False
        while True:
            query = {
                "container": self._container(pod),
                "follow": follow or None,
                "tailLines": tail if not last_key else None,
                "timestamps": timestamps or None,
                "sinceTime": _rfc3339(last_key) if last_key else None,
            }
            replayed, new_lines = 0, 0
            try:
                for line in self.api.stream_lines(
                    path, query, timeout_s=None if follow else 60.0, total_s=total_s
                ):
                    key, text = split_timestamp(line) if timestamps else ("", line)
                    if last_key and key and key <= last_key:
                        if key < last_key:
                            continue  # before where we were (sinceTime has second resolution)
                        replayed += 1
                        if replayed <= at_last:
                            continue
                    if key == last_key:
                        at_last += 1
                    elif key:
                        last_key, at_last = key, 1
                    shown += 1
                    new_lines += 1
                    drops = 0
                    yield key, rank, text
                if not follow or (reopened and not new_lines):
                    return  # the container exited (a reopened stream that ends at once says so too)
                dropped = None  # the server ended the stream: the container exited, or a proxy cut it
            except (urllib3.exceptions.HTTPError, ConnectionError, OSError, ApiError) as e:
                dropped = one_line(e)
            except EvaplanError as e:
                reason, _ = pod_problem(pod)
                phase = pod.get("status", {}).get("phase")
                if not (follow and phase == "Pending" and reason is None):
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
                    f"the log of rank {rank} ({name}) broke off after {shown} lines: {dropped}"
                )
                yield "", rank, f"(log stream of {name} dropped after {shown} lines: {dropped})"
                return
            # Following: reopen while the pod still runs.
            try:
                fresh = self.api.get(self.api.resource("v1", "Pod"), name, ns)
            except (ApiError, EvaplanError) as e:
                fresh, dropped = None, dropped or one_line(e)
            if fresh is None or fresh.get("status", {}).get("phase") != "Running":
                if dropped is not None:
                    self.log_problems.append(f"the log of rank {rank} ({name}) stopped: {dropped}")
                    yield "", rank, f"(log stream of {name} dropped and the pod no longer runs: {dropped})"
                return
            drops += 1
            if drops > LOG_RECONNECTS:
                self.log_problems.append(f"the log of rank {rank} ({name}) kept dropping: {dropped}")
                yield (
                    "",
                    rank,
                    f"(log stream of {name} dropped {LOG_RECONNECTS} times in a row; stopped following)",
                )
                return
            if dropped is not None:
                yield "", rank, f"(log stream of {name} dropped: {dropped}; reconnecting)"
            pod, reopened = fresh, True
            time.sleep(min(LOG_RECONNECT_CAP_S, FOLLOW_START_POLL_S * drops))

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
