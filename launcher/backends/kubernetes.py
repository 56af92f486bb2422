"""The Kubernetes backend: preflight, server-side dry run, create in order; status, logs, stop.

Works with every manifest flavour the renderer makes (docs/kubernetes.md): an Indexed Job + headless
Service, a Kubeflow PyTorchJob, or a JobSet. Everything it needs is read from the rendered
objects themselves (pod templates, GPU requests, node selectors), so the preflight checks exactly
what will be submitted. The `kubernetes` client is imported only by launcher/backends/kube_api.py,
so that planning and rendering neither need it installed nor spend start-up time importing it.

Split by concern: the objects (submit, labels, delete) in kube_submit.py, the GPU preflight in
kube_preflight.py, pods/phase/watch in kube_state.py, logs and metrics in kube_logs.py, reading pods
in kube_pods.py; this module keeps the backend's configuration and composes them.
"""

from __future__ import annotations

from typing import Any

from launcher.backends.base import Backend, Bundle, register
from launcher.backends.kube_api import Backoff, KubeApi
from launcher.backends.kube_logs import KubeLogs
from launcher.backends.kube_pods import pod_problem as pod_problem  # re-exported: why a pod is not running
from launcher.backends.kube_pods import pod_rank as pod_rank  # re-exported: rank of a pod
from launcher.backends.kube_preflight import KubePreflight
from launcher.backends.kube_state import KubeState
from launcher.backends.kube_submit import KubeSubmit
from launcher.backends.kube_submit import label_owned as label_owned  # re-exported: the object as launched
from launcher.manifest_check import check_rendered
from launcher.monitor import fmt_duration
from planner.errors import EvaplanError

# `--backend kubernetes`, first in its list of choices, and
# where it runs, as `--backend`'s help says (read by base.declared_backends without importing this module).
BACKEND = "kubernetes"
BACKEND_LISTED = 1
BACKEND_RUNS = "a Kubernetes cluster"

POD_DELETE_WAIT_S = 120.0


@register
class KubernetesBackend(KubeSubmit, KubePreflight, KubeState, KubeLogs, Backend):
    """The backend: its configuration (cluster, namespace) and the concerns composed from
    kube_submit, kube_preflight, kube_state and kube_logs."""

    name = BACKEND
    labels_objects = True
    cleans_up_finished = True
    stop_says = "its objects were deleted"

    def __init__(self, api: KubeApi, delete_wait_s: float = POD_DELETE_WAIT_S) -> None:
        super().__init__()
        self.api = api
        self.namespace = api.namespace
        self.delete_wait_s = delete_wait_s
        self._watch_forbidden = False

    @classmethod
    def for_record(cls, record: Any, backoff: Backoff | None = None) -> KubernetesBackend:
        d = record.backend_data
        return cls(
            KubeApi(
                kubeconfig=d.get("kubeconfig"),
                context=d.get("context"),
                namespace=record.namespace,
                backoff=backoff,
            )
        )

    @classmethod
    def for_launch(
        cls, *, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
    ) -> KubernetesBackend:
        return cls(KubeApi(kubeconfig=kubeconfig, context=context, namespace=namespace))

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
            KubeApi(
                kubeconfig=kubeconfig if kubeconfig is not None else d.get("kubeconfig"),
                # As kubectl reads them: --kubeconfig alone means that file's current context.
                context=context if told else d.get("context"),
                namespace=record.namespace,
            )
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
        return self.delete_found(
            self.labelled(record.name, record.backend_data.get("owner"), record.namespace or self.namespace)
        )

    def notice(self, line: str) -> None:
        if line not in self.notices:
            self.notices.append(line)
