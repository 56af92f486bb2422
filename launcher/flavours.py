"""One object per workload flavour: what differs between an Indexed Job, a PyTorchJob and a JobSet.

Everything the launcher needs to know about a flavour lives on its `Workload` object (docs/kubernetes.md,
"Flavours"): where its pod templates sit and how many pods each makes, where the in-cluster deadline
goes, how a pod's node rank is read from the labels the controller sets, and which conditions mean
done. Callers ask `workload_for(obj)` and never test the kind themselves.

What each controller does, as its own documentation and source say:
- Indexed Job: https://kubernetes.io/docs/tasks/job/job-with-pod-to-pod-communication/
- PyTorchJob: https://github.com/kubeflow/training-operator/tree/release-1.9/pkg/controller.v1/pytorch
- JobSet: https://jobset.sigs.k8s.io/docs/concepts/
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

from planner.errors import EvaplanError

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
JOBSET_REPLICATED_JOB = "node"  # the one replicated Job of an evaplan JobSet


@dataclass(frozen=True)
class Workload:
    """A flavour's workload kind. Subclasses say where things live in its spec."""

    api_version: ClassVar[str]
    kind: ClassVar[str]
    flavor: ClassVar[str]  # the `--flavor` name that renders it
    # Labels its controller puts on the pods it makes, valued with the workload's name.
    controller_labels: ClassVar[tuple[str, ...]]
    # How the pod template is laid out for it (launcher/render.py reads these).
    container_name: ClassVar[str] = "trainer"
    port_name: ClassVar[str] = "rendezvous"
    pod_restart_policy: ClassVar[str | None] = "Never"  # None: the controller sets it
    node_rank_from_completion_index: ClassVar[bool] = True  # NODE_RANK from the pod's index
    controller_sets_unbuffered: ClassVar[bool] = False  # PYTHONUNBUFFERED set by its controller

    def rendezvous(self, job: str, port: int) -> tuple[str, str, str]:
        """torchrun's (--node-rank, --master-addr, --master-port) in the container's command."""
        raise NotImplementedError

    def pod_subdomain(self, job: str) -> str | None:
        """The pods' `subdomain` (the headless Service giving them DNS names), if evaplan sets it."""
        return None

    def longest_pod_hostname(self, job: str, nodes: int) -> str:
        """The longest hostname its controller gives a pod of this job (it must be a DNS label)."""
        raise NotImplementedError

    def pod_templates(self, obj: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
        """(pod template, pods made from it), in the order they appear in the spec."""
        raise NotImplementedError

    def _deadline_holders(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The dicts that take `activeDeadlineSeconds`."""
        raise NotImplementedError

    def with_deadline(self, obj: dict[str, Any], seconds: int) -> dict[str, Any]:
        """A copy of `obj` whose pods the cluster stops after `seconds` of running (budget ÷ price)."""
        out = copy.deepcopy(obj)
        for holder in self._deadline_holders(out):
            holder["activeDeadlineSeconds"] = int(seconds)
        return out

    def deadline_s(self, obj: dict[str, Any]) -> int | None:
        values = [h.get("activeDeadlineSeconds") for h in self._deadline_holders(copy.deepcopy(obj))]
        return int(values[0]) if values and values[0] is not None else None

    def pods_per_child(self, obj: dict[str, Any]) -> int:
        """Pods per child Job (JobSet: rank = job index × this + completion index); 1 otherwise."""
        return 1

    def rank_of(self, pod: dict[str, Any], per_child: int = 1) -> int | None:
        """The node rank of one of its pods, from the labels its controller sets."""
        meta = pod.get("metadata", {})
        index = (meta.get("labels") or {}).get(
            COMPLETION_INDEX, (meta.get("annotations") or {}).get(COMPLETION_INDEX)
        )
        return int(index) if index is not None else None

    def total_pods(self, obj: dict[str, Any]) -> int:
        return sum(n for _, n in self.pod_templates(obj))


class IndexedJob(Workload):
    api_version = "batch/v1"
    kind = "Job"
    flavor = "indexed-job"
    controller_labels = ("batch.kubernetes.io/job-name", "job-name")

    def rendezvous(self, job: str, port: int) -> tuple[str, str, str]:
        # Pod <job>-<index> in the headless Service <job>: rank 0 is <job>-0.<job>.
        return "$(NODE_RANK)", f"{job}-0.{job}", str(port)

    def pod_subdomain(self, job: str) -> str | None:
        return job

    def longest_pod_hostname(self, job: str, nodes: int) -> str:
        return f"{job}-{nodes - 1}"  # Indexed Job: <job>-<index>

    def pod_templates(self, obj: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
        spec = obj.get("spec", {})
        return [(spec.get("template", {}), int(spec.get("parallelism", 1)))]

    def _deadline_holders(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        # batch/v1 JobSpec.activeDeadlineSeconds: counted from the Job's startTime, which a
        # resume from suspension (Kueue admission) resets, so queued time does not use it up.
        return [obj.setdefault("spec", {})]


class PyTorchJob(Workload):
    api_version = "kubeflow.org/v1"
    kind = "PyTorchJob"
    flavor = "pytorchjob"
    controller_labels = ("training.kubeflow.org/job-name",)
    container_name = "pytorch"  # the training operator requires this name
    port_name = "pytorchjob-port"
    pod_restart_policy = None  # from the replica spec
    node_rank_from_completion_index = False  # the operator injects PET_NODE_RANK
    controller_sets_unbuffered = True  # training-operator envvar.go

    def rendezvous(self, job: str, port: int) -> tuple[str, str, str]:
        return "$(PET_NODE_RANK)", "$(PET_MASTER_ADDR)", "$(PET_MASTER_PORT)"  # injected by the operator

    def longest_pod_hostname(self, job: str, nodes: int) -> str:
        return f"{job}-worker-{max(nodes - 2, 0)}" if nodes > 1 else f"{job}-master-0"

    def pod_templates(self, obj: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
        specs = obj.get("spec", {}).get("pytorchReplicaSpecs", {})
        return [(rs.get("template", {}), int(rs.get("replicas", 1))) for rs in specs.values()]

    def _deadline_holders(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        # kubeflow.org/v1 RunPolicy.activeDeadlineSeconds (training-operator, common/v1 types).
        return [obj.setdefault("spec", {}).setdefault("runPolicy", {})]

    def rank_of(self, pod: dict[str, Any], per_child: int = 1) -> int | None:
        labels = pod.get("metadata", {}).get("labels") or {}
        rtype = labels.get("training.kubeflow.org/replica-type")
        if rtype is None:
            return None
        idx = int(labels.get("training.kubeflow.org/replica-index", 0))
        return idx if rtype.lower() == "master" else idx + 1  # PET_NODE_RANK: master 0, workers 1..


class JobSet(Workload):
    api_version = "jobset.x-k8s.io/v1alpha2"
    kind = "JobSet"
    flavor = "jobset"
    controller_labels = ("jobset.sigs.k8s.io/jobset-name",)

    def rendezvous(self, job: str, port: int) -> tuple[str, str, str]:
        # <jobset>-<replicatedJob>-<jobIndex>-<podIndex> in the JobSet's subdomain <jobset>.
        return "$(NODE_RANK)", f"{job}-{JOBSET_REPLICATED_JOB}-0-0.{job}", str(port)

    def longest_pod_hostname(self, job: str, nodes: int) -> str:
        return f"{job}-{JOBSET_REPLICATED_JOB}-0-{nodes - 1}"

    def pod_templates(self, obj: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
        out = []
        for rj in obj.get("spec", {}).get("replicatedJobs", []):
            job_spec = rj.get("template", {}).get("spec", {})
            out.append(
                (
                    job_spec.get("template", {}),
                    int(rj.get("replicas", 1)) * int(job_spec.get("parallelism", 1)),
                )
            )
        return out

    def _deadline_holders(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        # JobSet has no deadline of its own: each child Job's spec (replicatedJobs[].template.spec)
        # is a batch/v1 JobSpec, whose activeDeadlineSeconds fails that Job and so the JobSet.
        return [
            rj.setdefault("template", {}).setdefault("spec", {})
            for rj in obj.setdefault("spec", {}).get("replicatedJobs", [])
        ]

    def with_deadline(self, obj: dict[str, Any], seconds: int) -> dict[str, Any]:
        out = super().with_deadline(obj, seconds)
        # A child Job that fails with DeadlineExceeded would otherwise be restarted by the JobSet
        # (failurePolicy.maxRestarts times), each restart with a fresh deadline: fail the whole
        # JobSet instead (jobset.x-k8s.io/v1alpha2 FailurePolicyRule, first matching rule wins).
        policy = out["spec"].setdefault("failurePolicy", {})
        rule = {"name": "budgetDeadline", "action": "FailJobSet", "onJobFailureReasons": ["DeadlineExceeded"]}
        policy["rules"] = [rule, *[r for r in policy.get("rules", []) if r.get("name") != rule["name"]]]
        return out

    def pods_per_child(self, obj: dict[str, Any]) -> int:
        return max(
            (
                int(rj.get("template", {}).get("spec", {}).get("parallelism", 1))
                for rj in obj.get("spec", {}).get("replicatedJobs", [])
            ),
            default=1,
        )

    def rank_of(self, pod: dict[str, Any], per_child: int = 1) -> int | None:
        index = super().rank_of(pod)
        if index is None:
            return None
        labels = pod.get("metadata", {}).get("labels") or {}
        gidx = labels.get("jobset.sigs.k8s.io/job-global-index", labels.get("jobset.sigs.k8s.io/job-index"))
        return int(gidx) * per_child + index if gidx is not None else index


WORKLOADS: dict[str, Workload] = {w.kind: w for w in (IndexedJob(), PyTorchJob(), JobSet())}
# Every kind a bundle may hold: the workloads plus what they need beside them (apiVersion, kind).
RENDERED_KINDS: frozenset[tuple[str, str]] = frozenset(
    {("v1", "ConfigMap"), ("v1", "Service")} | {(w.api_version, w.kind) for w in WORKLOADS.values()}
)


def workload_for(obj: dict[str, Any]) -> Workload | None:
    """The flavour object of a workload manifest, None for a ConfigMap or Service."""
    w = WORKLOADS.get(str(obj.get("kind")))
    return w if w is not None and obj.get("apiVersion") == w.api_version else None


def workload_of(objs: list[dict[str, Any]]) -> tuple[Workload, dict[str, Any]]:
    """The one workload among a bundle's objects, and its flavour."""
    found = [(w, o) for o in objs if (w := workload_for(o)) is not None]
    if len(found) != 1:
        raise EvaplanError(
            f"the bundle's manifests hold {len(found)} workloads (Job, PyTorchJob or JobSet), not one",
            hint="re-render the bundle",
        )
    return found[0]


def workload_by_flavor(flavor: str) -> Workload:
    """The flavour object of a `--flavor` name (indexed-job, pytorchjob, jobset)."""
    for w in WORKLOADS.values():
        if w.flavor == flavor:
            return w
    raise EvaplanError(f"unknown flavor {flavor!r}", hint="use indexed-job, pytorchjob or jobset")


def workload_by_kind(kind: str) -> Workload:
    w = WORKLOADS.get(kind)
    if w is None:
        raise EvaplanError(f"unknown workload kind {kind!r}", hint="re-launch the job with this evaplan")
    return w
