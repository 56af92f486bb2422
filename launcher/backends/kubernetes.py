"""The Kubernetes backend: preflight, server-side dry run, create in order; status, logs, stop.

Works with every manifest flavour the renderer makes (docs/kubernetes.md): an Indexed Job + headless
Service, a Kubeflow PyTorchJob, or a JobSet. Everything it needs is read from the rendered
objects themselves (pod templates, GPU requests, node selectors), so the preflight checks exactly
what will be submitted. The `kubernetes` client is imported only here, so that planning and
rendering neither need it installed nor spend start-up time importing it.
"""

from __future__ import annotations

import copy
import heapq
import queue
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from launcher.backends.base import (
    FAILED,
    LAUNCH_LABEL,
    METRICS_WINDOW,
    PENDING,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    Backend,
    Bundle,
    JobState,
    LogLine,
    RankState,
    parse_metrics_line,
    parse_progress_line,
    register,
)
from launcher.backends.interrupts import outcome_first
from launcher.backends.kube_api import (
    ApiError,
    Backoff,
    Conflict,
    Forbidden,
    KubeApi,
    OperatorMissing,
    ResourceRef,
)
from launcher.backends.kube_pods import (
    CONTROLLER_LABELS,
    DEGRADED,
    RANK_FAILURES,
    _quantity,
    _restarts,
    _run_intervals,
    _time,
    _utc,
    gpu_request,
    node_selector,
    pod_problem,
    pod_templates,
    run_seconds,
    workload_phase,
)
from launcher.backends.kube_pods import pod_rank as pod_rank  # re-exported: rank of a pod
from launcher.flavours import RENDERED_KINDS, WORKLOADS, workload_by_kind, workload_for, workload_of
from launcher.manifest_check import OWNER_LABEL, check_rendered
from launcher.monitor import fmt_duration

# JOB_LABEL: the label the renderer puts on every object and pod of a job (value: the job name).
from launcher.render import JOB_LABEL, KUEUE_QUEUE_LABEL
from planner.errors import EvaplanError, InfeasibleError

POD_DELETE_WAIT_S = 120.0
LOG_METRICS_TAIL_LINES = 200
FOLLOW_START_POLL_S = 2.0  # how often `logs -f` re-checks a pod whose container has not started
# `logs -f` reopens a dropped stream of a running pod this many times in a row (waiting
# FOLLOW_START_POLL_S × n, at most LOG_RECONNECT_CAP_S) before it says it stopped following.
LOG_RECONNECTS = 5
LOG_RECONNECT_CAP_S = 10.0


# --------------------------------------------------------------------------- logs
_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)? (.*)$", re.S)


def split_timestamp(line: str) -> tuple[str, str]:
    """`2026-11-27T10:00:00.123456789Z text` → (sortable UTC key, text); kubelet timestamps=true."""
    m = _TS.match(line)
    if not m:
        return "", line
    frac = (m.group(2) or ".0")[1:].ljust(9, "0")[:9]
    return f"{m.group(1)}.{frac}", m.group(4)


@register
class KubernetesBackend(Backend):
    name = "kubernetes"
    labels_objects = True
    cleans_up_finished = True
    stop_says = "its objects were deleted"

    def __init__(
        self,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        backoff: Backoff | None = None,
        delete_wait_s: float = POD_DELETE_WAIT_S,
    ) -> None:
        super().__init__()
        self.kubeconfig, self.context = kubeconfig, context
        self.api = KubeApi(kubeconfig=kubeconfig, context=context, namespace=namespace, backoff=backoff)
        self.namespace = self.api.namespace
        self.delete_wait_s = delete_wait_s
        self._watch_forbidden = False

    @classmethod
    def for_record(cls, record: Any, backoff: Backoff | None = None) -> KubernetesBackend:
        d = record.backend_data
        return cls(
            kubeconfig=d.get("kubeconfig"),
            context=d.get("context"),
            namespace=record.namespace,
            backoff=backoff,
        )

    @classmethod
    def for_launch(
        cls, *, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
    ) -> KubernetesBackend:
        return cls(kubeconfig=kubeconfig, context=context, namespace=namespace)

    @classmethod
    def from_record(
        cls, record: Any, kubeconfig: str | None = None, context: str | None = None
    ) -> KubernetesBackend:
        """Configured as the job was launched (kubeconfig, context, namespace). `kubeconfig`/`context`
        given by the user replace the recorded ones; otherwise a recorded context whose API server
        is not the one the job was launched on is refused: acting on another cluster would report
        a stop that stopped nothing."""
        d = record.backend_data
        told = kubeconfig is not None or context is not None
        be = cls(
            kubeconfig=kubeconfig if kubeconfig is not None else d.get("kubeconfig"),
            # As kubectl reads them: --kubeconfig alone means that file's current context.
            context=context if told else d.get("context"),
            namespace=record.namespace,
        )
        server, now = d.get("server"), be.api.server
        if server and not told and now != server:
            raise EvaplanError(
                f"job '{record.name}' was launched on the cluster at {server} (context {d.get('context')}), but "
                f"that context of {d.get('kubeconfig') or 'the default kubeconfig'} now points at {now}",
                hint=f"pass --kubeconfig FILE --context NAME of the cluster at {server}",
            )
        return be

    @classmethod
    def check_bundle(cls, bundle: Bundle, namespace: str | None) -> None:
        """The manifests are what evaplan rendered (digests, kinds, namespace, pod policy)."""
        check_rendered(
            bundle.manifests,
            bundle.object_digests,
            job_name=bundle.job_name,
            namespace=bundle.namespace,
            where=str(bundle.path),
            promise=bundle.pod_promise,
        )
        if namespace and bundle.namespace != namespace:
            raise EvaplanError(
                f"the bundle renders namespace {bundle.namespace}, not {namespace}",
                hint=f"re-render with -n {namespace}, or drop -n",
            )

    @classmethod
    def complete_render_flags(cls, given: dict[str, Any]) -> None:
        if not given.get("image"):
            raise EvaplanError(
                "launch renders the bundle and needs the trainer image", hint="add --image REGISTRY/IMAGE:TAG"
            )

    @classmethod
    def place(cls, record: Any) -> str:
        return f"namespace {record.namespace}"

    @classmethod
    def budget_enforcement(cls, deadline_s: int) -> str:
        return (
            f"budget enforced in the cluster: the workload stops after {fmt_duration(deadline_s)} "
            f"of running (activeDeadlineSeconds {deadline_s})"
        )

    @classmethod
    def record_namespace(cls, data: dict[str, Any]) -> str | None:
        return data.get("namespace")

    def rank_count(self, record: Any) -> int | None:
        n = record.backend_data.get("ranks") or (record.plan.get("cost_basis") or {}).get("nodes")
        return int(n) if n else None

    def abort(self, record: Any) -> list[Any]:
        """After a failed launch, `submit` has deleted what it created: returns what the cluster
        still holds of the job (or that it cannot tell: a create cut short may still land, or the
        cluster did not answer), so that the service keeps the job's record for `stop`."""
        if self.create_in_doubt:
            return ["a create cut short by a second signal"]
        try:
            return self.labelled(
                record.name, record.backend_data.get("owner"), record.namespace or self.namespace
            )
        except BaseException:
            return ["unknown: the cluster did not answer"]

    def stop_unfinished(self, record: Any) -> list[str]:
        """Delete what an interrupted launch created, found by the job's and the owner's labels."""
        return self.delete_labelled(
            record.name, record.backend_data.get("owner"), record.namespace or self.namespace
        )

    def notice(self, line: str) -> None:
        if line not in self.notices:
            self.notices.append(line)

    # ------------------------------------------------------------------ launch
    def objects_of(self, bundle: Bundle) -> list[dict[str, Any]]:
        objs = []
        for o in bundle.manifests:
            o = {**o, "metadata": {**o.get("metadata", {})}}
            o["metadata"].setdefault("namespace", self.namespace)
            objs.append(o)
        return objs

    def launch(
        self,
        bundle: Bundle,
        *,
        job_name: str,
        replace: bool,
        resume: bool,
        dry_run: bool = False,
        before_start: Callable[[dict[str, Any]], None] | None = None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """The bundle's objects, labelled with `owner` and a new launch id (and the workload with the
        budget's deadline, `set_deadline`), submitted in order (`submit`); `before_start` runs after
        every check and before the first change to the cluster."""
        launch_id = secrets.token_hex(8)
        objs = [label_owned(o, owner, self.deadline_s, launch_id) for o in self.objects_of(bundle)]
        return self.submit(
            objs,
            job_name=job_name,
            owner=owner,
            replace=replace,
            resume=resume,
            dry_run=dry_run,
            before_create=before_start,
            launch_id=None if dry_run else launch_id,
        )

    def submit(
        self,
        objs: list[dict[str, Any]],
        *,
        job_name: str,
        owner: str | None,
        replace: bool,
        resume: bool,
        dry_run: bool = False,
        before_create: Callable[[dict[str, Any]], None] | None = None,
        launch_id: str | None = None,
    ) -> dict[str, Any]:
        """Check, then create `objs` in order. `before_create(data)` runs after every check and
        before the first change to the cluster (the service records its intent there). Objects of
        the same name are deleted first only with replace/resume and only when they carry
        `owner`; on a failure, everything labelled with this job, owner and (when given) this
        launch's `launch_id` is deleted again: never what another launch of the job created.

        A signal (^C, SIGTERM, SIGHUP) during a create takes effect once its reply is in, so
        the rollback sees the object; if a second signal cuts the create short,
        `create_in_doubt` is set (the object may still land: the service keeps the job's record)."""
        workload_kind, workload = workload_of(objs)
        refs = [self.api.ref_of(o) for o in objs]  # CRD discovery: fails fast if an operator is missing
        existing = [
            (r, found)
            for r, o in zip(refs, objs, strict=True)
            if (found := self.api.get(r, o["metadata"]["name"], self.api.ns_of(o))) is not None
        ]
        foreign = [o for _, o in existing if owner is None or _labels(o).get(OWNER_LABEL) != owner]
        if existing and not (replace or resume) and not foreign:
            # Ours, but this store has no record of the job (the service refuses a recorded one
            # before this): only --replace can act on it; `stop` knows no such job.
            names = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for _, o in existing)
            raise EvaplanError(
                f"job '{job_name}' already exists in namespace {self.namespace} ({names}), created by this "
                "job store but no longer recorded in it",
                hint="pass --replace to delete and recreate it",
            )
        if foreign:
            o = foreign[0]
            theirs = _labels(o).get(OWNER_LABEL)
            raise EvaplanError(
                f"{o.get('kind')}/{o['metadata']['name']} in namespace {self.api.ns_of(o)} was not created by "
                f"this job store ({'owner ' + theirs if theirs else 'no evaplan owner label'}); "
                "evaplan deletes only what it created",
                hint="render with another --job-name, or ask its owner to remove it",
            )
        self.preflight(objs, job_name=job_name, ignore_own_pods=bool(existing))
        data = {
            # The cluster as launched: status, logs and stop go back to it, whatever the
            # kubeconfig's current context is later (backends/base.py backend_for).
            "kubeconfig": str(Path(self.kubeconfig).resolve()) if self.kubeconfig else None,
            "context": self.api.context,
            "server": self.api.server,
            "namespace": self.api.ns_of(workload),
            "owner": owner,
            "launch_id": launch_id,
            "objects": [[o["apiVersion"], o["kind"], o["metadata"]["name"]] for o in objs],
            "workload": [workload["apiVersion"], workload["kind"], workload["metadata"]["name"]],
            # JobSet pod rank = job index × pods per child Job + completion index
            "per_job_pods": workload_kind.pods_per_child(workload),
            "ranks": workload_kind.total_pods(workload),
        }
        if dry_run:
            # Existing objects would be deleted first; the rest must pass admission now.
            kept = {(o["kind"], o["metadata"]["name"]) for _, o in existing}
            checked = [o for o in objs if (o["kind"], o["metadata"]["name"]) not in kept]
            for o in checked:
                self.api.create(o, dry_run=True)
            return {**data, "dry_run_objects": [f"{o['kind']}/{o['metadata']['name']}" for o in checked]}
        if not existing:
            for o in objs:  # server-side dry run: admission, validation and quota, nothing persisted
                self.api.create(o, dry_run=True)
        if before_create is not None:
            before_create(data)
        if existing:
            self._delete([(r, o) for r, o in reversed(existing)], wait=True)
            for o in objs:
                self.api.create(o, dry_run=True)
        try:
            for o in objs:
                with outcome_first() as signals:
                    try:
                        self.api.create(o)
                    except BaseException:
                        self.create_in_doubt = len(signals) > 1
                        raise
        except BaseException as e:
            # Nothing half-created stays behind, including objects whose create reply was lost:
            # they are found by label. A failing clean-up must not hide the real error.
            try:
                self.delete_labelled(
                    job_name,
                    owner,
                    data["namespace"],
                    kinds=[(o["apiVersion"], o["kind"]) for o in objs],
                    launch_id=launch_id,
                )
            except BaseException as cleanup:
                note = (
                    f"; and removing what was created failed too ({_one_line(cleanup)}): "
                    f"`evaplan stop {job_name}` removes it"
                )
                if isinstance(e, EvaplanError):
                    e.message += note
                    e.args = (e.line(),)
            if isinstance(e, Conflict):
                # Another launch of this name (another job store, or the cluster's own user)
                # created it meanwhile: say so, not the API's "already exists".
                raise EvaplanError(
                    f"job '{job_name}' was created in namespace {data['namespace']} by another launch while "
                    f"this one ran ({_one_line(e)}); this launch removed only what it had created",
                    hint=f"`evaplan status {job_name}` from the store that launched it shows it; "
                    "or render with another --job-name",
                ) from None
            raise
        return data

    def preflight(self, objs: list[dict[str, Any]], *, job_name: str, ignore_own_pods: bool) -> None:
        """Fail before anything is created when the GPUs the job asks for are not there.

        Reading nodes and every namespace's pods needs a ClusterRole (rbac.yaml, evaplan-preflight);
        without it the check degrades (nodes forbidden: skipped; pods forbidden: capacity only)
        and says so once."""
        # Templates asking for the same thing (PyTorchJob Master + Worker) compete for the same GPUs.
        merged: dict[tuple[str, int, frozenset[tuple[str, frozenset[str]]]], int] = {}
        queued = False
        for o in objs:
            queued = queued or KUEUE_QUEUE_LABEL in (o.get("metadata", {}).get("labels") or {})
            for tmpl, pods in pod_templates(o):
                resource, per_pod = gpu_request(tmpl)
                if resource and per_pod:
                    key = (
                        resource,
                        per_pod,
                        frozenset((k, frozenset(v)) for k, v in node_selector(tmpl).items()),
                    )
                    merged[key] = merged.get(key, 0) + pods
        wants = [
            (res, per_pod, pods, {k: set(v) for k, v in sel}) for (res, per_pod, sel), pods in merged.items()
        ]
        if not wants:
            return
        try:
            nodes = self.api.list(self.api.resource("v1", "Node"))
        except Forbidden:
            self.notice(
                "preflight: listing nodes is forbidden (403), so the GPU check was skipped; "
                "grant the evaplan-preflight ClusterRole of rbac.yaml for it"
            )
            return
        try:
            pods = self.api.list(self.api.resource("v1", "Pod"), all_namespaces=True)
        except Forbidden:
            self.notice(
                "preflight: listing pods in all namespaces is forbidden (403), so only node capacity "
                "was checked, not free GPUs; grant the evaplan-preflight ClusterRole of rbac.yaml for it"
            )
            pods, queued = [], True  # capacity only: the same check as for a queued job
        used: dict[tuple[str, str], int] = {}
        for p in pods:
            if p.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if ignore_own_pods and self._owns(p, job_name, None):
                continue
            node = p.get("spec", {}).get("nodeName")
            if not node:
                continue
            for c in p.get("spec", {}).get("containers", []):
                res = c.get("resources") or {}
                # Extended resources: requests default to limits and must equal them when both are set.
                for key, val in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
                    if key.endswith("/gpu"):
                        used[(node, key)] = used.get((node, key), 0) + _quantity(val)
        for resource, per_pod, n_pods, selector in wants:
            matching = [
                n
                for n in nodes
                if not n.get("spec", {}).get("unschedulable")
                and all(n.get("metadata", {}).get("labels", {}).get(k) in v for k, v in selector.items())
            ]
            want_desc = ", ".join(f"{k}={'|'.join(sorted(v))}" for k, v in selector.items()) or resource
            if not matching:
                seen = sorted(
                    {
                        f"{n['metadata']['name']}: "
                        + ", ".join(f"{k}={n['metadata'].get('labels', {}).get(k, '-')}" for k in selector)
                        for n in nodes
                    }
                )
                raise InfeasibleError(
                    f"preflight: no schedulable node carries {want_desc} (the job needs {n_pods} pods × "
                    f"{per_pod} {resource})",
                    hint="nodes seen: "
                    + ("; ".join(seen) if seen else "none")
                    + " — pick --hardware matching the cluster",
                )
            rows, fit = [], 0
            for n in matching:
                name = n["metadata"]["name"]
                alloc = _quantity(n.get("status", {}).get("allocatable", {}).get(resource, 0))
                free = max(0, alloc - used.get((name, resource), 0))
                fit += free // per_pod
                rows.append({"node": name, "resource": resource, "allocatable": alloc, "free": free})
            self.preflight_report = rows
            if queued:
                # Kueue admits the suspended workload when its quota allows: busy GPUs are its
                # business, but a cluster that could never hold the job is still refused.
                fit = sum(r["allocatable"] // per_pod for r in rows)
                if fit < n_pods:
                    raise InfeasibleError(
                        f"preflight: the job needs {n_pods} pods × {per_pod} {resource} but the matching nodes "
                        f"hold only {fit} such pods even when idle",
                        hint="plan fewer nodes",
                    )
                continue
            if fit < n_pods:
                per_node = ", ".join(f"{r['node']} {r['free']}/{r['allocatable']}" for r in rows)
                raise InfeasibleError(
                    f"preflight: the job needs {n_pods} pods × {per_pod} {resource} but only {fit} fit now; "
                    f"free {resource} per node: {per_node}",
                    hint="wait for GPUs to free up, or plan fewer nodes",
                )

    def _delete(self, objs: list[tuple[ResourceRef, dict[str, Any]]], *, wait: bool) -> None:
        for r, o in objs:
            self.api.delete(r, o["metadata"]["name"], self.api.ns_of(o))
        if not wait:
            return
        deadline = time.monotonic() + self.delete_wait_s
        for r, o in objs:
            while self.api.get(r, o["metadata"]["name"], self.api.ns_of(o)) is not None:
                if time.monotonic() > deadline:
                    raise EvaplanError(
                        f"{o['kind']}/{o['metadata']['name']} is still being deleted after "
                        f"{self.delete_wait_s:.0f}s",
                        hint="retry later, or check its finalizers",
                    )
                time.sleep(1.0)

    # ------------------------------------------------------------------ objects by label
    def labelled(
        self,
        job_name: str,
        owner: str | None,
        namespace: str,
        kinds: list[tuple[str, str]] | None = None,
        launch_id: str | None = None,
    ) -> list[tuple[ResourceRef, dict[str, Any]]]:
        """Every object of the kinds evaplan renders (that the cluster serves) carrying this job's
        label and, when given, this owner's and this launch's: found whether or not a create reply
        came back."""
        wanted = {JOB_LABEL: job_name, OWNER_LABEL: owner, LAUNCH_LABEL: launch_id}
        wanted = {k: v for k, v in wanted.items() if v}
        selector = ",".join(f"{k}={v}" for k, v in wanted.items())
        out = []
        # Workloads first: deleting them first stops the pods before their ConfigMap goes.
        order = sorted(set(kinds or RENDERED_KINDS), key=lambda k: (k[1] not in WORKLOADS, k))
        for api_version, kind in order:
            try:
                ref = self.api.resource(api_version, kind)
            except OperatorMissing:
                continue  # the cluster does not serve it, so nothing of that kind exists
            for o in self.api.list(ref, namespace, label_selector=selector):
                labels = _labels(o)  # filter again: some servers (and kmock) ignore labelSelector
                if all(labels.get(k) == v for k, v in wanted.items()):
                    out.append((ref, o))
        return out

    def delete_labelled(
        self,
        job_name: str,
        owner: str | None,
        namespace: str,
        kinds: list[tuple[str, str]] | None = None,
        launch_id: str | None = None,
    ) -> list[str]:
        """Delete every object `labelled` finds; returns their kind/name."""
        found = self.labelled(job_name, owner, namespace, kinds, launch_id)
        self._delete(found, wait=False)
        return [f"{o['kind']}/{o['metadata']['name']}" for _, o in found]

    # ------------------------------------------------------------------ status
    def _owns(self, pod: dict[str, Any], job_name: str, workload_name: str | None) -> bool:
        labels = pod.get("metadata", {}).get("labels", {}) or {}
        if labels.get(JOB_LABEL) == job_name:
            return True
        return workload_name is not None and any(labels.get(k) == workload_name for k in CONTROLLER_LABELS)

    def _all_pods(self, record: Any) -> list[dict[str, Any]]:
        _, _, wname = record.backend_data["workload"]
        # kmock (and old servers) may ignore labelSelector: filter again here.
        pods = [
            p
            for p in self.api.list(
                self.api.resource("v1", "Pod"), label_selector=f"{JOB_LABEL}={record.name}"
            )
            if self._owns(p, record.name, wname)
        ]
        if not pods:
            pods = [
                p for p in self.api.list(self.api.resource("v1", "Pod")) if self._owns(p, record.name, wname)
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
                    if not self._owns(p, record.name, wname):
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

    # ------------------------------------------------------------------ logs and metrics
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
                dropped = _one_line(e)
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
                fresh, dropped = None, dropped or _one_line(e)
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

    # ------------------------------------------------------------------ stop
    def stop(self, record: Any) -> None:
        """Delete every object of the job: those recorded at launch and, by label, any whose
        create reply never came back. Workloads go first (foreground: their pods, then them)."""
        d = record.backend_data
        namespace = record.namespace or self.namespace
        kinds = sorted({(a, k) for a, k, _ in d.get("objects", [])} | set(RENDERED_KINDS))
        self.delete_labelled(record.name, d.get("owner"), namespace, kinds=kinds)
        objs = []
        for api_version, kind, name in reversed(d.get("objects", [])):
            try:
                ref = self.api.resource(api_version, kind)
            except OperatorMissing:
                continue
            objs.append((ref, {"kind": kind, "metadata": {"name": name, "namespace": namespace}}))
        for r, o in objs:
            found = self.api.get(r, o["metadata"]["name"], namespace)
            if found is not None and (
                d.get("owner") is None or _labels(found).get(OWNER_LABEL) == d.get("owner")
            ):
                self.api.delete(r, o["metadata"]["name"], namespace)


def label_owned(
    obj: dict[str, Any], owner: str | None, deadline_s: float | None, launch_id: str | None = None
) -> dict[str, Any]:
    """The object as launch submits it: the owner label (and this launch's id, when given) on it
    and on its pod templates, and on the workload the in-cluster deadline. Nothing else differs
    from the rendered object."""
    w = workload_for(obj)
    out = (
        w.with_deadline(obj, deadline_s) if (w is not None and deadline_s is not None) else copy.deepcopy(obj)
    )
    labels = {**({OWNER_LABEL: owner} if owner else {}), **({LAUNCH_LABEL: launch_id} if launch_id else {})}
    out.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    if w is not None:
        for template, _ in w.pod_templates(out):
            template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    return out


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _one_line(e: BaseException) -> str:
    text = e.line() if isinstance(e, EvaplanError) else (str(e) or type(e).__name__)
    return text.splitlines()[0][:200] if text else type(e).__name__


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
