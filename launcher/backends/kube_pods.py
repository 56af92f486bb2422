"""Reading a Kubernetes job's pods and workload: which rank a pod is, why it is not running,
the workload's phase, and the node-seconds its containers ran (what `status` bills). Pure
functions of the API objects, so that the backend's state, watch and logs share them and tests
read them without a cluster."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from launcher.backends.base import FAILED, PENDING, RUNNING, SUCCEEDED, UNKNOWN
from launcher.flavours import WORKLOADS, workload_for

# JOB_LABEL: the label the renderer puts on every object and pod of a job (value: the job name).
from launcher.render import JOB_LABEL

# Labels the controllers put on the pods they make: the Job controller's (batch.kubernetes.io/job-name
# and the older job-name, https://kubernetes.io/docs/reference/labels-annotations-taints/), the
# training-operator's (JobNameLabel, https://github.com/kubeflow/training-operator/blob/release-1.9/pkg/apis/kubeflow.org/v1/common_types.go)
# and JobSet's (https://jobset.sigs.k8s.io/docs/concepts/).
CONTROLLER_LABELS = (
    "batch.kubernetes.io/job-name",
    "job-name",
    "training.kubeflow.org/job-name",
    "jobset.sigs.k8s.io/jobset-name",
)
# Waiting/terminated reasons worth naming (kubelet: pkg/kubelet/images, kuberuntime).
WAITING_PROBLEMS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "InvalidImageName",
        "RunContainerError",
    }
)
# DisruptionTarget condition reasons (k8s.io/api/core/v1: PodReasonPreemptionByScheduler, ...)
# and what `status` calls them.
DISRUPTION_REASONS = {
    "PreemptionByScheduler": "Preempted",
    "EvictionByEvictionAPI": "Evicted",
    "TerminationByKubelet": "Evicted",
    "DeletionByTaintManager": "NodeTainted",
    "DeletionByPodGC": "NodeLost",
}
# A rank in one of these states is not training, whatever the pod phase says.
RANK_FAILURES = frozenset(
    {"OOMKilled", "Evicted", "Preempted", "NodeTainted", "NodeLost", "Error", "CrashLoopBackOff"}
)
DEGRADED = "Degraded"  # a job whose workload runs while some rank does not (OOMKilled, Evicted, ...)


# --------------------------------------------------------------------------- manifest reading
def pod_templates(obj: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """(pod template, pods made from it) of a workload object (its flavour says where); [] otherwise."""
    w = workload_for(obj)
    return w.pod_templates(obj) if w is not None else []


def gpu_request(template: dict[str, Any]) -> tuple[str | None, int]:
    """The GPU resource (nvidia.com/gpu, amd.com/gpu) and how many one pod asks for."""
    for c in template.get("spec", {}).get("containers", []):
        res = c.get("resources", {})
        for section in ("limits", "requests"):
            for key, val in (res.get(section) or {}).items():
                if key.endswith("/gpu"):
                    return key, int(val)
    return None, 0


def node_selector(template: dict[str, Any]) -> dict[str, set[str]]:
    """Required node labels: nodeSelector, plus required nodeAffinity `In` terms (first term)."""
    spec = template.get("spec", {})
    out: dict[str, set[str]] = {k: {str(v)} for k, v in (spec.get("nodeSelector") or {}).items()}
    terms = (
        spec.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    for expr in terms[0].get("matchExpressions", []) if terms else []:
        if expr.get("operator") == "In":
            out[expr["key"]] = set(expr.get("values", []))
    return out


def _quantity(v: Any) -> int:
    try:
        return int(str(v))
    except ValueError:
        return 0


# --------------------------------------------------------------------------- pod status
def pod_rank(pod: dict[str, Any], per_job: int = 1) -> int | None:
    """The node rank of a pod from the labels its controller sets (whichever flavour made it)."""
    for w in WORKLOADS.values():
        labels = pod.get("metadata", {}).get("labels") or {}
        if any(k in labels for k in w.controller_labels) or (
            w.kind == "PyTorchJob" and "training.kubeflow.org/replica-type" in labels
        ):
            r = w.rank_of(pod, per_job)
            if r is not None:
                return r
    return WORKLOADS["JobSet"].rank_of(pod, per_job)


def pod_problem(pod: dict[str, Any]) -> tuple[str | None, str | None]:
    """(reason, message) when a pod is not running as it should, else (None, None)."""
    status = pod.get("status", {})
    for cond in status.get("conditions", []):
        # Set by the scheduler, the eviction API, the kubelet and the taint manager before they
        # end a pod (Kubernetes docs, "Pod disruption conditions"): the container's own exit
        # (143, "Error") is only the symptom.
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            why = DISRUPTION_REASONS.get(cond.get("reason") or "", cond.get("reason") or "Disrupted")
            return why, " ".join(x for x in (cond.get("reason"), cond.get("message")) if x) or None
    if status.get("reason") == "Evicted":
        return "Evicted", status.get("message")
    for cond in status.get("conditions", []):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond.get("reason") or "Unschedulable", cond.get("message")
    for cs in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
        state, last = cs.get("state", {}), cs.get("lastState", {})
        waiting = state.get("waiting") or {}
        term = state.get("terminated") or {}
        last_term = last.get("terminated") or {}
        if waiting.get("reason") in WAITING_PROBLEMS:
            msg = waiting.get("message")
            if last_term.get("reason"):
                msg = f"last exit: {last_term['reason']} (exit code {last_term.get('exitCode')})" + (
                    f"; {msg}" if msg else ""
                )
            return waiting["reason"], msg
        if term.get("reason") == "OOMKilled" or (
            last_term.get("reason") == "OOMKilled" and not state.get("running")
        ):
            return (
                "OOMKilled",
                f"container {cs.get('name')} exceeded its memory limit (exit code {(term or last_term).get('exitCode')})",
            )
        if term and term.get("exitCode", 0) != 0:
            return term.get(
                "reason"
            ) or "Error", f"exit code {term.get('exitCode')}: {term.get('message') or ''}".strip()
    return None, None


def _restarts(pod: dict[str, Any]) -> int:
    return sum(int(cs.get("restartCount", 0)) for cs in pod.get("status", {}).get("containerStatuses", []))


def _time(s: str | None) -> datetime | None:
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def workload_phase(obj: dict[str, Any] | None, pods: list[dict[str, Any]]) -> tuple[str, str | None]:
    """Job phase from the workload's status conditions, else from its pods."""
    if obj is None:
        return UNKNOWN, "the job's objects are gone from the cluster"
    conds = {
        c.get("type"): c for c in obj.get("status", {}).get("conditions", []) if c.get("status") == "True"
    }
    for t, phase in (
        ("Complete", SUCCEEDED),
        ("SuccessCriteriaMet", SUCCEEDED),
        ("Succeeded", SUCCEEDED),
        ("Completed", SUCCEEDED),
        ("Failed", FAILED),
        ("FailureTarget", FAILED),
    ):
        if t in conds:
            c = conds[t]
            return phase, " ".join(x for x in (c.get("reason"), c.get("message")) if x) or None
    if "Suspended" in conds:
        return PENDING, "suspended (waiting for quota or admission, e.g. Kueue)"
    if "Restarting" in conds:
        return RUNNING, "restarting: " + (conds["Restarting"].get("message") or "")
    phases = [p.get("status", {}).get("phase") for p in pods]
    if phases and all(ph == "Running" for ph in phases):
        return RUNNING, None
    if any(ph == "Running" for ph in phases):
        return RUNNING, f"{phases.count('Running')}/{len(phases)} pods running"
    return PENDING, None if pods else "no pods yet"


def _run_intervals(pod: dict[str, Any], now: datetime | None) -> list[tuple[datetime, datetime]]:
    """When the pod's containers ran: each (started, finished or now); restarts counted each."""
    out = []
    now = now or datetime.now(timezone.utc)
    for cs in pod.get("status", {}).get("containerStatuses", []) or []:
        for st in (cs.get("state") or {}, cs.get("lastState") or {}):
            if st.get("running"):
                t0 = _time(st["running"].get("startedAt"))
                if t0:
                    out.append((t0, now))
            if st.get("terminated"):
                t0, t1 = _time(st["terminated"].get("startedAt")), _time(st["terminated"].get("finishedAt"))
                if t0 and t1:
                    out.append((t0, t1))
    return out


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def run_seconds(
    pod: dict[str, Any], now: datetime | None = None, not_before: datetime | None = None
) -> float:
    """Seconds the pod's node was billed: the pod's containers' running time (one pod per node),
    so time queued (Kueue-suspended, unschedulable, pulling the image) costs nothing and the count
    stops when the containers stop. Overlapping containers are counted once (union of intervals)."""
    spans = sorted(_run_intervals(pod, now))
    if not_before is not None:  # clamped: nothing before the job's creation is billed
        spans = [(max(t0, not_before), t1) for t0, t1 in spans if t1 > not_before]
    total, cur_start, cur_end = 0.0, None, None
    for t0, t1 in spans:
        if cur_end is None or t0 > cur_end:
            if cur_end is not None and cur_start is not None:
                total += max(0.0, (cur_end - cur_start).total_seconds())
            cur_start, cur_end = t0, t1
        else:
            cur_end = max(cur_end, t1)
    if cur_end is not None and cur_start is not None:
        total += max(0.0, (cur_end - cur_start).total_seconds())
    return total


def owns_pod(pod: dict[str, Any], job_name: str, workload_name: str | None) -> bool:
    """Whether `pod` is one of the job's: it carries the job's label, or its controller's label
    names the job's workload."""
    labels = pod.get("metadata", {}).get("labels", {}) or {}
    if labels.get(JOB_LABEL) == job_name:
        return True
    return workload_name is not None and any(labels.get(k) == workload_name for k in CONTROLLER_LABELS)
