"""The Kubernetes backend's preflight: before anything is created, the GPUs the job asks for
are on schedulable nodes that match its selectors, and (unless Kueue queues it) free now."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from launcher.backends.kube_api import Forbidden, KubeApi
from launcher.backends.kube_pods import _quantity, gpu_request, node_selector, owns_pod, pod_templates
from launcher.render import KUEUE_QUEUE_LABEL
from planner.errors import InfeasibleError


class KubePreflight:
    """The preflight of KubernetesBackend (launcher/backends/kubernetes.py), which provides
    `api`, `notice` and `preflight_report`."""

    api: KubeApi
    preflight_report: list[dict[str, Any]]
    notice: Callable[[str], None]

    def preflight(self, objs: list[dict[str, Any]], *, job_name: str, ignore_own_pods: bool) -> None:
        """Fail before anything is created when the GPUs the job asks for are not there.

        Reading nodes and every namespace's pods needs a ClusterRole (rbac.yaml, evaplan-preflight);
        without it the check degrades (nodes forbidden: skipped; pods forbidden: capacity only)
        and says so once."""
        wants, queued = _gpu_wants(objs)
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
        used = _gpus_in_use(pods, job_name if ignore_own_pods else None)
        for want in wants:
            self._check_fit(want, nodes, used, queued)

    def _check_fit(
        self, want: _Want, nodes: list[dict[str, Any]], used: dict[tuple[str, str], int], queued: bool
    ) -> None:
        """The nodes matching one kind of pod hold its pods: free now, or (queued by Kueue) when idle."""
        resource, per_pod, n_pods, selector = want
        matching = [
            n
            for n in nodes
            if not n.get("spec", {}).get("unschedulable")
            and all(n.get("metadata", {}).get("labels", {}).get(k) in v for k, v in selector.items())
        ]
        if not matching:
            want_desc = ", ".join(f"{k}={'|'.join(sorted(v))}" for k, v in selector.items()) or resource
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
            return
        if fit < n_pods:
            per_node = ", ".join(f"{r['node']} {r['free']}/{r['allocatable']}" for r in rows)
            raise InfeasibleError(
                f"preflight: the job needs {n_pods} pods × {per_pod} {resource} but only {fit} fit now; "
                f"free {resource} per node: {per_node}",
                hint="wait for GPUs to free up, or plan fewer nodes",
            )


# One kind of pod the job asks for: GPU resource, GPUs per pod, how many pods, node selector.
_Want = tuple[str, int, int, dict[str, set[str]]]


def _gpu_wants(objs: list[dict[str, Any]]) -> tuple[list[_Want], bool]:
    """The GPU pods the objects ask for, one row per (resource, per pod, selector), and whether
    Kueue queues the job."""
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
    return wants, queued


def _gpus_in_use(pods: list[dict[str, Any]], own_job: str | None) -> dict[tuple[str, str], int]:
    """GPUs each node's live pods hold, by (node, resource); the pods of `own_job` (about to be
    replaced) left out."""
    used: dict[tuple[str, str], int] = {}
    for p in pods:
        if p.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if own_job is not None and owns_pod(p, own_job, None):
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
    return used
