"""The Kubernetes backend's view of a running job: its pods by rank, its phase and each rank's
state (what `status` shows and bills), and a watch that wakes `status --watch` when a pod changes."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from launcher.backends.base import FAILED, PENDING, RUNNING, STOPPED, SUCCEEDED, JobState, RankState
from launcher.backends.kube_api import Forbidden, KubeApi
from launcher.backends.kube_pods import (
    DEGRADED,
    RANK_FAILURES,
    _restarts,
    _run_intervals,
    _time,
    _utc,
    owns_pod,
    pod_problem,
    run_seconds,
    workload_phase,
)
from launcher.flavours import workload_by_kind

# JOB_LABEL: the label the renderer puts on every object and pod of a job (value: the job name).
from launcher.render import JOB_LABEL


class KubeState:
    """A job's pods, phase and watch, for KubernetesBackend (launcher/backends/kubernetes.py),
    which provides `api`, `notice` and `_watch_forbidden`."""

    api: KubeApi
    notice: Callable[[str], None]
    _watch_forbidden: bool

    def _all_pods(self, record: Any) -> list[dict[str, Any]]:
        _, _, wname = record.backend_data["workload"]
        # kmock (and old servers) may ignore labelSelector: filter again here.
        pods = [
            p
            for p in self.api.list(
                self.api.resource("v1", "Pod"), label_selector=f"{JOB_LABEL}={record.name}"
            )
            if owns_pod(p, record.name, wname)
        ]
        if not pods:
            pods = [
                p for p in self.api.list(self.api.resource("v1", "Pod")) if owns_pod(p, record.name, wname)
            ]
        return pods

    def _ranked(self, record: Any, pods: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
        """The job's pods with their rank, latest incarnation per rank, by rank."""
        per_job = int(record.backend_data.get("per_job_pods", 1))
        flavour = workload_by_kind(record.backend_data["workload"][1])
        by_rank: dict[int, dict[str, Any]] = {}
        unranked = []
        for p in pods:
            r = flavour.rank_of(p, per_job)
            if r is None:
                unranked.append(p)
                continue
            prev = by_rank.get(r)
            if prev is None or p["metadata"].get("creationTimestamp", "") >= prev["metadata"].get(
                "creationTimestamp", ""
            ):
                by_rank[r] = p
        nxt = max(by_rank, default=-1) + 1
        for p in sorted(unranked, key=lambda p: p["metadata"]["name"]):
            by_rank[nxt] = p
            nxt += 1
        return sorted(by_rank.items())

    def _pods(self, record: Any) -> list[tuple[int, dict[str, Any]]]:
        return self._ranked(record, self._all_pods(record))

    def ranks(self, record: Any) -> int | None:
        """How many node ranks (pods) the job has, from its launch record."""
        n = record.backend_data.get("ranks")
        return int(n) if n is not None else None

    def state(self, record: Any) -> JobState:
        api_version, kind, wname = record.backend_data["workload"]
        workload = self.api.get(self.api.resource(api_version, kind), wname, record.namespace)
        all_pods = self._all_pods(record) if workload is not None else []
        pods = self._ranked(record, all_pods)
        phase, message = workload_phase(workload, [p for _, p in pods])
        if workload is None and record.last_phase == STOPPED:
            phase, message = STOPPED, "stopped by `evaplan stop`; its objects were deleted"
        ranks = []
        for rank, p in pods:
            reason, msg = pod_problem(p)
            ranks.append(
                RankState(
                    rank=rank,
                    name=p["metadata"]["name"],
                    phase=p.get("status", {}).get("phase", "Unknown"),
                    reason=reason,
                    message=msg,
                    restarts=_restarts(p),
                    node=p.get("spec", {}).get("nodeName"),
                )
            )
        failing = [r for r in ranks if r.reason in RANK_FAILURES]
        if failing:
            first = failing[0]
            why = f"rank {first.rank} ({first.name}) {first.reason}" + (
                f": {first.message}" if first.message else ""
            )
            if phase == FAILED:
                message = f"{message}; {why}" if message else why
            elif phase in (RUNNING, PENDING):
                phase, message = DEGRADED, why + (f" ({message})" if message else "")
        starts = [t for t in (_time(p.get("status", {}).get("startTime")) for _, p in pods) if t]
        wstatus = (workload or {}).get("status", {})
        started = _time(wstatus.get("startTime")) or (min(starts) if starts else None)
        finished = _time(wstatus.get("completionTime")) if phase in (SUCCEEDED, FAILED) else None
        if phase == FAILED and finished is None:
            ends = [t for p in all_pods for t in _run_intervals(p, None)]
            finished = max((e for _, e in ends), default=None)
        return JobState(
            phase=phase,
            ranks=ranks,
            message=message,
            started_at=started,
            finished_at=finished,
            # Billed from the job's own creation on: a pod's clock ahead of ours, or a pod of an
            # earlier job of this name, never bills time before this job existed.
            run_node_s=sum(run_seconds(p, not_before=_utc(record.created_at)) for p in all_pods)
            if workload is not None
            else None,
        )

    def wait_for_change(self, record: Any, timeout_s: float) -> bool:
        """Block until one of the job's pods changes (a watch that resumes after disconnects), or
        `timeout_s` passes. True when something changed. A watch that fails (forbidden, API down)
        waits out the timeout instead of returning at once: the caller's loop never spins."""
        deadline = time.monotonic() + timeout_s
        if self._watch_forbidden:
            time.sleep(timeout_s)
            return False
        pod_ref = self.api.resource("v1", "Pod")
        _, _, wname = record.backend_data["workload"]
        known = {p["metadata"]["name"]: p["metadata"].get("resourceVersion") for _, p in self._pods(record)}
        result: queue.Queue[bool] = queue.Queue()
        stop = threading.Event()

        def run() -> None:
            try:
                for ev in self.api.watch(
                    pod_ref, record.namespace, read_timeout_s=max(1.0, timeout_s), stop=stop
                ):
                    p = ev.get("object", {})
                    if not owns_pod(p, record.name, wname):
                        continue
                    name, rv = p.get("metadata", {}).get("name"), p.get("metadata", {}).get("resourceVersion")
                    if ev.get("type") == "ADDED" and known.get(name, object()) == rv:
                        continue  # replay of a state we already showed
                    result.put(True)
                    return
            except Forbidden as e:
                self._watch_forbidden = True
                self.notice(f"watching pods is forbidden ({e.message[:80]}); polling every interval instead")
                result.put(False)
            except Exception:  # the caller polls on timeout anyway
                result.put(False)

        threading.Thread(target=run, daemon=True, name=f"watch-{record.name}").start()
        try:
            changed = result.get(timeout=timeout_s)
        except queue.Empty:
            return False
        finally:
            stop.set()  # the watcher leaves at its next event or read timeout
        if not changed:
            time.sleep(max(0.0, deadline - time.monotonic()))
        return changed
