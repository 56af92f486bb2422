"""What a launch needs besides the plan: names, image, cluster specifics (`evaplan render` flags).

Every user string is checked here (launcher/names.py) so that it renders as exactly its literal or
is refused with one line naming the flag, the rule and an example.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from launcher import names
from launcher.env_policy import check_env_entry
from planner.errors import EvaplanError

Flavor = Literal["indexed-job", "pytorchjob", "jobset", "slurm"]
FLAVORS: tuple[str, ...] = ("indexed-job", "pytorchjob", "jobset")  # the Kubernetes workloads
SLURM_FLAVOR = "slurm"  # a batch script (launcher/slurm_script.py)
# A Slurm name (partition, account, QOS): what slurm.conf(5) and sacctmgr accept in practice, kept to
# characters that need no quoting in an #SBATCH line.
_SLURM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A node feature expression of --constraint (sbatch(1): names joined by & | , and [ ] ( ) * digits).
_SLURM_CONSTRAINT = re.compile(r"[A-Za-z0-9_.&|,\[\]()*-]{1,256}")
# torchrun's default --master-port (torch/distributed/run.py).
DEFAULT_MASTER_PORT = 29500
# boto3 multipart upload from one node (10 threads × 8 MiB parts by default) — an evaplan
# assumption, conservative for a 100+ Gbit NIC; calibrate with a real upload.
S3_UPLOAD_GBPS_DEFAULT = 1.0
# The optional options checked by one rule of launcher/names.py each, named in errors as --field-name.
_SUBDOMAIN_FIELDS = (
    "image_pull_secret",
    "service_account",
    "priority_class",
    "s3_secret",
    "checkpoint_pvc",
    "data_pvc",
)
_NAME_RULES: dict[str, Callable[[str, str], str]] = {
    "image": names.check_image,
    **dict.fromkeys(_SUBDOMAIN_FIELDS, names.check_dns1123_subdomain),
    "rdma_resource": names.check_qualified_name,
    "queue": names.check_label_value,
    "socket_ifname": names.check_ifname_list,
    "ib_hca": names.check_hca_list,
    "checkpoint_s3_uri": names.check_s3_uri,
}


def _matching(v: str | None, ok: Callable[[str], object], flag: str, what: str, *, hint: str) -> str | None:
    """`v` as given when it is None or `ok(v)`; else one line: `FLAG 'v' is not WHAT`."""
    if v is not None and not ok(v):
        raise EvaplanError(f"{flag} {v!r} is not {what}", hint=hint)
    return v


class RenderOptions(BaseModel):
    """Everything about a launch that is not in the plan: names, image, cluster specifics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_name: str
    image: str | None = Field(default=None, description="the trainer image; Kubernetes flavours need it")
    flavor: Flavor = "indexed-job"
    namespace: str = "default"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secret: str | None = None
    service_account: str | None = None
    # RDMA NICs: a device-plugin resource (rdma/rdma_shared_device_a, nvidia.com/hostdev, rdma/ib),
    # with IPC_LOCK so the verbs library can pin (register) memory for RDMA, as the plugin's example
    # pod does (https://github.com/Mellanox/k8s-rdma-shared-dev-plugin, example/test-hca-pod.yaml).
    rdma_resource: str | None = None
    fabric: bool = Field(default=True, description="request the offering's fabric (EFA, RDMA) by default")
    rdma_per_node: int = Field(default=1, gt=0)
    ipc_lock: bool | None = Field(default=None, description="default: on when rdma_resource is set")
    roce: bool | None = Field(default=None, description="NCCL_IB_GID_INDEX=3; default: on for AMD")
    network_annotation: str | None = Field(default=None, description="Multus networks, e.g. sriov-a,sriov-b")
    socket_ifname: str | None = None
    ib_hca: str | None = None
    nccl_debug: Literal["VERSION", "WARN", "INFO", "TRACE"] = "WARN"
    env: tuple[tuple[str, str], ...] = ()
    # --env names the user vouches are not secrets (launcher/env_policy.py: a false positive).
    env_not_secret: tuple[str, ...] = ()
    s3_secret: str | None = Field(default=None, description="Secret with AWS_* keys, as envFrom secretRef")
    checkpoint_s3_uri: str | None = None
    checkpoint_pvc: str | None = None
    data_url: str | None = None
    data_pvc: str | None = Field(
        default=None, description="claim mounted read-only at /data for local shards"
    )
    data_workers: int | None = Field(
        default=None,
        ge=0,
        description="DataLoader workers per rank; default: the plan's (`--data-workers` of the estimate) for "
        "WebDataset shards, 0 for synthetic data",
    )
    nvme_host_path: str | None = None
    queue: str | None = None
    priority_class: str | None = None
    max_restarts: int = Field(default=3, ge=0)
    master_port: int = Field(default=DEFAULT_MASTER_PORT, ge=1, le=65535)
    cpu_per_node: int | None = Field(default=None, gt=0)
    checkpoint_write_gbps: float | None = Field(default=None, gt=0)
    s3_upload_gbps: float = Field(default=S3_UPLOAD_GBPS_DEFAULT, gt=0)
    comms_logger: bool = False
    optimizer: Literal["lamb", "adamw"] | None = Field(
        default=None, description="default: the model's recipe"
    )
    rbac_subject: str = Field(default="Group:evaplan-launchers", description="Kind:name for the RoleBinding")
    # The slurm flavour (launcher/slurm_script.py): where the job runs and what it may use.
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time_limit_min: int | None = Field(default=None, gt=0, description="default: from the plan's wall time")
    work_dir: str | None = Field(
        default=None,
        description="a folder on the cluster's shared filesystem; the job's files go in <it>/<job>",
    )
    python: str = Field(default="python3", description="the interpreter with evaclip installed, on the nodes")

    @model_validator(mode="after")
    def _flavour_needs(self) -> RenderOptions:
        if self.flavor != SLURM_FLAVOR and self.image is None:
            raise EvaplanError(
                f"--flavor {self.flavor} needs the trainer image", hint="add --image REGISTRY/IMAGE:TAG"
            )
        if self.flavor == SLURM_FLAVOR and self.work_dir is None:
            raise EvaplanError(
                "--flavor slurm needs --work-dir: a folder on the cluster's shared filesystem for the job's "
                "configs, checkpoints and logs",
                hint="e.g. --work-dir /shared/$USER/evaplan (or work_dir in evaplan.toml)",
            )
        return self

    @field_validator("partition", "account", "qos")
    @classmethod
    def _slurm_name(cls, v: str | None, info: Any) -> str | None:
        what = "a Slurm name (letters, digits, _ . -; at most 64)"
        return _matching(v, _SLURM_NAME.fullmatch, f"--{info.field_name}", what, hint="e.g. --partition gpu")

    @field_validator("constraint")
    @classmethod
    def _constraint(cls, v: str | None) -> str | None:
        what = "a node feature expression"
        return _matching(
            v, _SLURM_CONSTRAINT.fullmatch, "--constraint", what, hint="e.g. --constraint 'h100&ib'"
        )

    @field_validator("work_dir", "python")
    @classmethod
    def _abs_plain_path(cls, v: str | None, info: Any) -> str | None:
        if v is None:
            return None
        flag = "--" + info.field_name.replace("_", "-")
        names.check_text(v, flag)
        plain = re.fullmatch(r"(/[A-Za-z0-9._+-]+)+/?", v) and not ({".", ".."} & set(v.split("/")))
        if info.field_name == "python" and re.fullmatch(r"[A-Za-z0-9._+-]+", v):
            return v  # a command found on the nodes' PATH
        if not plain:
            raise EvaplanError(
                f"{flag} {v!r} is not an absolute path of plain names (letters, digits, . _ + -)",
                hint="e.g. /shared/evaplan"
                if info.field_name == "work_dir"
                else "e.g. /shared/venv/bin/python",
            )
        return v.rstrip("/") or "/"

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        return names.check_dns1123_label(v, "--namespace")

    @field_validator(*_NAME_RULES)
    @classmethod
    def _named(cls, v: str | None, info: Any) -> str | None:
        return (
            None if v is None else _NAME_RULES[info.field_name](v, f"--{info.field_name.replace('_', '-')}")
        )

    @field_validator("network_annotation")
    @classmethod
    def _networks(cls, v: str | None) -> str | None:
        if v is None:
            return None
        for part in v.split(","):
            ns, _, net = part.strip().rpartition("/")
            names.check_dns1123_subdomain(net.split("@", 1)[0], "--network-annotation network")
            if ns:
                names.check_dns1123_label(ns, "--network-annotation namespace")
        return v

    @model_validator(mode="after")
    def _env(self) -> RenderOptions:
        given = {key for key, _ in self.env}
        for name in self.env_not_secret:
            if name not in given:
                raise EvaplanError(
                    f"--env-not-secret {name} names no --env entry",
                    hint="pass the name of an --env NAME=VALUE you give, or drop it",
                )
        for key, value in self.env:
            # Reserved rank/rendezvous names, and secrets unless the user vouched for the name;
            # first, so that no later message quotes a secret pasted as a name.
            check_env_entry(key, value, not_secret=key in self.env_not_secret)
            names.check_env_name(key, "--env name")
            names.check_text(value, f"--env {key} value")
        return self

    @field_validator("data_url")
    @classmethod
    def _data(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if v.startswith("s3://"):
            return names.check_s3_uri(v, "--data-url")
        names.check_text(v, "--data-url")
        if not v.startswith("/"):
            raise EvaplanError(
                f"--data-url {v!r} is neither s3://bucket/prefix nor an absolute path in the pod",
                hint="e.g. s3://my-bucket/laion-shards or /data/shards on a mounted volume",
            )
        return v

    @field_validator("nvme_host_path")
    @classmethod
    def _nvme(cls, v: str | None) -> str | None:
        if v is not None:
            names.check_text(v, "--nvme-host-path")
        what = "an absolute path of plain names"
        return _matching(v, names.is_host_folder, "--nvme-host-path", what, hint="e.g. /local_nvme")

    @field_validator("rbac_subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        kind, sep, name = v.partition(":")
        if not sep or kind not in ("User", "Group", "ServiceAccount"):
            raise EvaplanError(
                f"--rbac-subject {v!r} is not Kind:name with Kind User, Group or ServiceAccount",
                hint="e.g. Group:ml-infra or ServiceAccount:evaplan",
            )
        if kind == "ServiceAccount":
            names.check_dns1123_subdomain(name, "--rbac-subject service account")
        else:
            names.check_text(name, "--rbac-subject name")
            if not name or name != name.strip() or any(c in name for c in "\n\r\t"):
                raise EvaplanError(
                    f"--rbac-subject name {name!r} is empty or has surrounding whitespace",
                    hint="e.g. Group:ml-infra",
                )
        return v
