"""The Kubernetes backend's objects: submitting a bundle's objects in order (checks, server-side
dry run, create, rollback of a failed launch), finding them by label, and deleting them (`stop`)."""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.backends.base import LAUNCH_LABEL, Bundle, LaunchOptions
from launcher.backends.interrupts import outcome_first
from launcher.backends.kube_api import Conflict, KubeApi, OperatorMissing, ResourceRef, one_line
from launcher.flavours import RENDERED_KINDS, WORKLOADS, Workload, workload_for, workload_of
from launcher.manifest_check import OWNER_LABEL

# JOB_LABEL: the label the renderer puts on every object and pod of a job (value: the job name).
from launcher.render import JOB_LABEL
from planner.errors import EvaplanError


class KubeSubmit:
    """Creating and deleting a job's objects, for KubernetesBackend (launcher/backends/kubernetes.py),
    which provides `api`, `namespace`, `deadline_s`, `delete_wait_s`,
    `create_in_doubt` and `preflight` (launcher/backends/kube_preflight.py)."""

    api: KubeApi
    namespace: str | None
    deadline_s: float | None
    delete_wait_s: float
    create_in_doubt: bool
    preflight: Callable[..., None]

    def objects_of(self, bundle: Bundle) -> list[dict[str, Any]]:
        objs = []
        for o in bundle.manifests:
            o = {**o, "metadata": {**o.get("metadata", {})}}
            o["metadata"].setdefault("namespace", self.namespace)
            objs.append(o)
        return objs

    def launch(self, bundle: Bundle, opts: LaunchOptions) -> dict[str, Any]:
        """The bundle's objects, labelled with `opts.owner` and a new launch id (and the workload
        with the budget's deadline, `set_deadline`), submitted in order (`submit`);
        `opts.before_start` runs after every check and before the first change to the cluster."""
        launch_id = secrets.token_hex(8)
        objs = [label_owned(o, opts.owner, self.deadline_s, launch_id) for o in self.objects_of(bundle)]
        return self.submit(objs, opts, launch_id=None if opts.dry_run else launch_id)

    def submit(
        self, objs: list[dict[str, Any]], opts: LaunchOptions, launch_id: str | None = None
    ) -> dict[str, Any]:
        """Check, then create `objs` in order. `opts.before_start(data)` runs after every check and
        before the first change to the cluster (the service records its intent there). Objects of
        the same name are deleted first only with replace/resume and only when they carry
        `opts.owner`; on a failure, everything labelled with this job, owner and (when given) this
        launch's `launch_id` is deleted again: never what another launch of the job created.

        A signal (^C, SIGTERM, SIGHUP) during a create takes effect once its reply is in, so
        the rollback sees the object; if a second signal cuts the create short,
        `create_in_doubt` is set (the object may still land: the service keeps the job's record)."""
        workload = workload_of(objs)  # exactly one, before anything is asked of the cluster
        existing = self._ours_to_replace(objs, opts)
        self.preflight(objs, job_name=opts.job_name, ignore_own_pods=bool(existing))
        data = self._launch_data(objs, workload, opts.owner, launch_id)
        if opts.dry_run:
            # Existing objects would be deleted first; the rest must pass admission now.
            kept = {(o["kind"], o["metadata"]["name"]) for _, o in existing}
            checked = [o for o in objs if (o["kind"], o["metadata"]["name"]) not in kept]
            for o in checked:
                self.api.create(o, dry_run=True)
            return {**data, "dry_run_objects": [f"{o['kind']}/{o['metadata']['name']}" for o in checked]}
        if not existing:
            for o in objs:  # server-side dry run: admission, validation and quota, nothing persisted
                self.api.create(o, dry_run=True)
        if opts.before_start is not None:
            opts.before_start(data)
        if existing:
            self._delete([(r, o) for r, o in reversed(existing)], wait=True)
            for o in objs:
                self.api.create(o, dry_run=True)
        self._create_all(objs, opts, data["namespace"], launch_id)
        return data

    def _ours_to_replace(
        self, objs: list[dict[str, Any]], opts: LaunchOptions
    ) -> list[tuple[ResourceRef, dict[str, Any]]]:
        """The objects of `objs` that already exist, each this store's and replaceable with
        --replace/--resume; anything else of the same name is refused in one line."""
        refs = [self.api.ref_of(o) for o in objs]  # CRD discovery: fails fast if an operator is missing
        existing = [
            (r, found)
            for r, o in zip(refs, objs, strict=True)
            if (found := self.api.get(r, o["metadata"]["name"], self.api.ns_of(o))) is not None
        ]
        owner = opts.owner
        foreign = [o for _, o in existing if owner is None or _labels(o).get(OWNER_LABEL) != owner]
        if existing and not (opts.replace or opts.resume) and not foreign:
            # Ours, but this store has no record of the job (the service refuses a recorded one
            # before this): only --replace can act on it; `stop` knows no such job.
            names = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for _, o in existing)
            raise EvaplanError(
                f"job '{opts.job_name}' already exists in namespace {self.namespace} ({names}), created by this "
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
        return existing

    def _launch_data(
        self,
        objs: list[dict[str, Any]],
        workload: tuple[Workload, dict[str, Any]],
        owner: str | None,
        launch_id: str | None,
    ) -> dict[str, Any]:
        """What the job's record keeps of this launch (`workload`: its flavour and object)."""
        workload_kind, obj = workload
        return {
            # The cluster as launched: status, logs and stop go back to it, whatever the
            # kubeconfig's current context is later (backends/base.py backend_for).
            "kubeconfig": str(Path(self.api.kubeconfig).resolve()) if self.api.kubeconfig else None,
            "context": self.api.context,
            "server": self.api.server,
            "namespace": self.api.ns_of(obj),
            "owner": owner,
            "launch_id": launch_id,
            "objects": [[o["apiVersion"], o["kind"], o["metadata"]["name"]] for o in objs],
            "workload": [obj["apiVersion"], obj["kind"], obj["metadata"]["name"]],
            # JobSet pod rank = job index × pods per child Job + completion index
            "per_job_pods": workload_kind.pods_per_child(obj),
            "ranks": workload_kind.total_pods(obj),
        }

    def _create_all(
        self, objs: list[dict[str, Any]], opts: LaunchOptions, namespace: str, launch_id: str | None
    ) -> None:
        """Create `objs` in order; on any failure, remove what this launch created and re-raise."""
        job_name = opts.job_name
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
            kinds = [(o["apiVersion"], o["kind"]) for o in objs]
            try:
                self.delete_found(
                    self.labelled(job_name, opts.owner, namespace, kinds=kinds, launch_id=launch_id)
                )
            except BaseException as cleanup:
                note = (
                    f"; and removing what was created failed too ({one_line(cleanup)}): "
                    f"`evaplan stop {job_name}` removes it"
                )
                if isinstance(e, EvaplanError):
                    e.message += note
                    e.args = (e.line(),)
            if isinstance(e, Conflict):
                # Another launch of this name (another job store, or the cluster's own user)
                # created it meanwhile: say so, not the API's "already exists".
                raise EvaplanError(
                    f"job '{job_name}' was created in namespace {namespace} by another launch while "
                    f"this one ran ({one_line(e)}); this launch removed only what it had created",
                    hint=f"`evaplan status {job_name}` from the store that launched it shows it; "
                    "or render with another --job-name",
                ) from None
            raise

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

    def delete_found(self, found: list[tuple[ResourceRef, dict[str, Any]]]) -> list[str]:
        """Delete the objects `labelled` found; returns their kind/name."""
        self._delete(found, wait=False)
        return [f"{o['kind']}/{o['metadata']['name']}" for _, o in found]

    def stop(self, record: Any) -> None:
        """Delete every object of the job: those recorded at launch and, by label, any whose
        create reply never came back. Workloads go first (foreground: their pods, then them)."""
        d = record.backend_data
        namespace = record.namespace or self.namespace
        kinds = sorted({(a, k) for a, k, _ in d.get("objects", [])} | set(RENDERED_KINDS))
        self.delete_found(self.labelled(record.name, d.get("owner"), namespace, kinds=kinds))
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
