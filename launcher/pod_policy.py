"""The restricted policy every evaplan pod keeps, checked on each pod template before `launch`.

The templates (templates/k8s/_pod.yaml.j2) promise: the rendered image running the bundled
trainer under torchrun and nothing else (one container, no init or ephemeral containers, no
`args`); a non-root user (runAsNonRoot, the rendered uid/gid), seccomp RuntimeDefault, every
capability dropped but IPC_LOCK when RDMA needs it, no privilege escalation; no service-account
token and only the rendered service account; volumes of the kinds rendered only (the job's
ConfigMap, emptyDirs, the named claims, and the local NVMe folder as the one hostPath when the
plan offloads to NVMe); no host network/PID/IPC, no host ports; environment values literal or
from the pod's own fields, Secrets only through the rendered envFrom references.

`PodPromise` is what render gave the template (recorded in the signed bundle.json). The check
holds on its own, whatever the bundle's signature says: the promise itself must keep the policy
(non-root ids, IPC_LOCK at most, one NVMe host folder of plain names, the trainer's command), and
each pod must match it field by field, so a key leak or a template bug still cannot put a root,
host-mounting or foreign-image pod on the cluster. Every refusal is one line naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launcher import names
from launcher.flavours import workload_for
from launcher.render import TORCHRUN_FLAGS, TRAINER_ARGS
from planner.errors import EvaplanError

ALLOWED_CAPABILITIES = frozenset({"IPC_LOCK"})  # RDMA memory registration (render_options.py)
NVME_VOLUME = "nvme"  # the one hostPath volume: DeepSpeed's NVMe offload folder

# The keys the templates write, per object; anything else is something evaplan never renders.
POD_SPEC_KEYS = frozenset(
    {
        "restartPolicy",
        "subdomain",
        "terminationGracePeriodSeconds",
        "automountServiceAccountToken",
        "securityContext",
        "serviceAccountName",
        "priorityClassName",
        "imagePullSecrets",
        "nodeSelector",
        "tolerations",
        "containers",
        "volumes",
    }
)
CONTAINER_KEYS = frozenset(
    {
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "ports",
        "env",
        "envFrom",
        "resources",
        "securityContext",
        "volumeMounts",
    }
)
PORT_KEYS = frozenset({"name", "containerPort", "protocol"})
MOUNT_KEYS = frozenset({"name", "mountPath", "readOnly"})
SECCOMP = {"type": "RuntimeDefault"}


class ManifestRefused(EvaplanError):
    """A bundle whose manifests are not what evaplan rendered, or a pod outside the policy (exit 2)."""


def is_trainer_command(cmd: Any) -> bool:
    """torchrun with its five rendezvous flags, then exactly `-m evaclip.train` and the two configs."""
    if not (isinstance(cmd, list | tuple) and all(isinstance(a, str) for a in cmd)):
        return False
    n = len(TORCHRUN_FLAGS)
    return (
        len(cmd) == 1 + n + len(TRAINER_ARGS)
        and cmd[0] == "torchrun"
        and all(
            a.startswith(f) and len(a) > len(f) for a, f in zip(cmd[1 : 1 + n], TORCHRUN_FLAGS, strict=True)
        )
        and tuple(cmd[1 + n :]) == TRAINER_ARGS
    )


@dataclass(frozen=True)
class PodPromise:
    """What render gave the pod template: the values each pod must carry."""

    image: str
    command: tuple[str, ...]
    service_account: str | None
    config_map: str
    claims: tuple[str, ...]
    nvme_host_path: str | None
    env_from_secrets: tuple[str, ...]
    capabilities: tuple[str, ...]
    run_as_user: int
    run_as_group: int

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "command": list(self.command),
            "service_account": self.service_account,
            "config_map": self.config_map,
            "claims": list(self.claims),
            "nvme_host_path": self.nvme_host_path,
            "env_from_secrets": list(self.env_from_secrets),
            "capabilities": list(self.capabilities),
            "run_as_user": self.run_as_user,
            "run_as_group": self.run_as_group,
        }

    @classmethod
    def from_pod(cls, pod: dict[str, Any]) -> PodPromise:
        """From the values render passes to the template (launcher/render.py `_pod`)."""
        vols = pod["volumes"]
        return cls(
            image=pod["image"],
            command=tuple(pod["command"]),
            service_account=pod["service_account"],
            config_map=next(v["source"] for v in vols if v["kind"] == "configMap"),
            claims=tuple(v["source"] for v in vols if v["kind"] == "persistentVolumeClaim"),
            nvme_host_path=next((v["source"] for v in vols if v["kind"] == "hostPath"), None),
            env_from_secrets=tuple(pod["env_from_secrets"]),
            capabilities=tuple(pod["capabilities"]),
            run_as_user=pod["security"]["run_as_user"],
            run_as_group=pod["security"]["run_as_group"],
        )

    @classmethod
    def from_json(cls, doc: Any, where: str) -> PodPromise:
        """Read back from bundle.json, refusing a promise that breaks the policy itself."""

        def bad(what: str) -> ManifestRefused:
            return ManifestRefused(
                f"bundle {where}: bundle.json's pod promise {what}", hint="re-render it with `evaplan render`"
            )

        if not isinstance(doc, dict):
            raise bad("is missing (rendered by an older evaplan)")
        try:
            p = cls(
                image=str(doc["image"]),
                command=tuple(doc["command"]),
                service_account=None if doc["service_account"] is None else str(doc["service_account"]),
                config_map=str(doc["config_map"]),
                claims=tuple(str(c) for c in doc["claims"]),
                nvme_host_path=None if doc["nvme_host_path"] is None else str(doc["nvme_host_path"]),
                env_from_secrets=tuple(str(s) for s in doc["env_from_secrets"]),
                capabilities=tuple(str(c) for c in doc["capabilities"]),
                run_as_user=doc["run_as_user"],
                run_as_group=doc["run_as_group"],
            )
        except (KeyError, TypeError):
            raise bad("lacks a field or has one of the wrong type") from None
        try:
            names.check_image(p.image, "image")
            if p.service_account is not None:
                names.check_dns1123_subdomain(p.service_account, "service account")
        except EvaplanError:
            raise bad("names an image or service account evaplan would not render") from None
        for what, uid in (("run_as_user", p.run_as_user), ("run_as_group", p.run_as_group)):
            if type(uid) is not int or uid <= 0:
                raise bad(f"{what} is not a non-root id")
        if not is_trainer_command(p.command):
            raise bad("command is not the trainer's (torchrun -m evaclip.train)")
        if not set(p.capabilities) <= ALLOWED_CAPABILITIES:
            raise bad(f"adds capabilities beyond {', '.join(sorted(ALLOWED_CAPABILITIES))}")
        if p.nvme_host_path is not None and not names.is_host_folder(p.nvme_host_path):
            raise bad("NVMe host folder is not an absolute path of plain names")
        return p


def check_pod_policy(obj: dict[str, Any], where: str, promise: PodPromise) -> None:
    """Refuse (ManifestRefused, exit 2) any pod template of `obj` outside the policy and the promise."""
    w = workload_for(obj)
    if w is None:
        return
    name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    for template, _ in w.pod_templates(obj):
        spec = template.get("spec")
        problem = _pod_problem(spec if isinstance(spec, dict) else {}, promise)
        if problem:
            raise ManifestRefused(
                f"bundle {where}: {name}: pod {problem}, which evaplan never renders",
                hint="re-render the bundle with `evaplan render`; evaplan submits only pods it rendered",
            )


def _pod_problem(spec: dict[str, Any], p: PodPromise) -> str | None:
    """The first way `spec` leaves the policy, as "<field path> <what is wrong>"; None if it keeps it."""
    extra = sorted(set(spec) - POD_SPEC_KEYS)
    if extra:
        return f"spec.{extra[0]} is set"
    if spec.get("automountServiceAccountToken") is not False:
        return "spec.automountServiceAccountToken is not false"
    if spec.get("serviceAccountName") != p.service_account:
        return "spec.serviceAccountName is not the rendered service account"
    sc = spec.get("securityContext")
    want_sc = {
        "runAsNonRoot": True,
        "runAsUser": p.run_as_user,
        "runAsGroup": p.run_as_group,
        "fsGroup": p.run_as_group,
        "seccompProfile": SECCOMP,
    }
    if not isinstance(sc, dict):
        return "spec.securityContext is missing"
    for key in sorted(set(sc) | set(want_sc)):
        if key not in want_sc:
            return f"spec.securityContext.{key} is set"
        if sc.get(key) != want_sc[key]:
            return f"spec.securityContext.{key} differs from the rendered {want_sc[key]!r}"
    containers = spec.get("containers")
    if not isinstance(containers, list) or len(containers) != 1 or not isinstance(containers[0], dict):
        return "spec.containers is not the one trainer container"
    volumes = spec.get("volumes")
    if not isinstance(volumes, list):
        return "spec.volumes is not a list"
    declared: set[str] = set()
    for i, v in enumerate(volumes):
        problem = _volume_problem(v, p)
        if problem:
            return f"spec.volumes[{i}] {problem}"
        declared.add(v["name"])
    return _container_problem(containers[0], p, declared)


def _volume_problem(v: Any, p: PodPromise) -> str | None:
    if not isinstance(v, dict) or not isinstance(v.get("name"), str):
        return "has no name"
    sources = sorted(set(v) - {"name"})
    if len(sources) != 1:
        return f"({v['name']}) has {len(sources)} sources"
    kind, src = sources[0], v[sources[0]]
    src = src if isinstance(src, dict) else {}
    if kind == "configMap":
        return None if src == {"name": p.config_map} else f"({v['name']}) configMap is not the job's"
    if kind == "emptyDir":
        return None if set(src) <= {"medium", "sizeLimit"} else f"({v['name']}) emptyDir has extra fields"
    if kind == "persistentVolumeClaim":
        ok = src.get("claimName") in p.claims and set(src) <= {"claimName", "readOnly"}
        return None if ok else f"({v['name']}) persistentVolumeClaim is not a rendered claim"
    if kind == "hostPath":
        want = {"path": p.nvme_host_path, "type": "DirectoryOrCreate"}
        ok = v["name"] == NVME_VOLUME and p.nvme_host_path is not None and src == want
        return None if ok else f"({v['name']}) hostPath is not the rendered NVMe folder"
    return f"({v['name']}) is a {kind} volume"


def _container_problem(c: dict[str, Any], p: PodPromise, declared: set[str]) -> str | None:
    where = "spec.containers[0]"
    extra = sorted(set(c) - CONTAINER_KEYS)
    if extra:
        return f"{where}.{extra[0]} is set"
    if c.get("image") != p.image:
        return f"{where}.image is not the rendered image"
    if c.get("command") != list(p.command):
        return f"{where}.command is not the trainer's rendered command"
    csc = c.get("securityContext")
    caps = {"drop": ["ALL"], **({"add": list(p.capabilities)} if p.capabilities else {})}
    if not isinstance(csc, dict):
        return f"{where}.securityContext is missing"
    for key in sorted(set(csc) | {"allowPrivilegeEscalation", "capabilities"}):
        if key == "allowPrivilegeEscalation" and csc.get(key) is not False:
            return f"{where}.securityContext.allowPrivilegeEscalation is not false"
        if key == "capabilities" and csc.get(key) != caps:
            return f"{where}.securityContext.capabilities differ from the rendered {caps!r}"
        if key not in ("allowPrivilegeEscalation", "capabilities"):
            return f"{where}.securityContext.{key} is set"
    for i, port in enumerate(c.get("ports") or []):
        extra = sorted(set(port) - PORT_KEYS) if isinstance(port, dict) else ["(not a mapping)"]
        if extra:
            return f"{where}.ports[{i}].{extra[0]} is set"
    for i, e in enumerate(c.get("env") or []):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            return f"{where}.env[{i}] has no name"
        ref = e.get("valueFrom")
        if ref is not None:
            kinds = sorted(ref) if isinstance(ref, dict) else ["(not a mapping)"]
            if kinds != ["fieldRef"]:
                return f"{where}.env[{i}].valueFrom.{kinds[0] if kinds else ''} is set"
        if set(e) - {"name", "value", "valueFrom"}:
            return f"{where}.env[{i}] has extra fields"
    refs = c.get("envFrom") or []
    if refs != [{"secretRef": {"name": s}} for s in p.env_from_secrets]:
        return f"{where}.envFrom is not the rendered Secret references"
    for i, m in enumerate(c.get("volumeMounts") or []):
        if not isinstance(m, dict) or set(m) - MOUNT_KEYS or m.get("name") not in declared:
            return f"{where}.volumeMounts[{i}] is not a plain mount of a declared volume"
    return None
