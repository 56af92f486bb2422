"""Render a plan into the files of a bundle: the DeepSpeed config, the trainer's run config and the
Kubernetes manifests of one of three flavours (docs/kubernetes.md, "Flavours"): `indexed-job`,
`pytorchjob`, `jobset`.

Everything is derived here, in Python, and the Jinja2 templates (templates/, `StrictUndefined`)
only lay the values out; every value goes in through `tojson`, a YAML-safe JSON encoder, so a user
string renders as exactly its literal or is refused beforehand (launcher/names.py). Rendering is
deterministic (sorted keys where order does not matter, no timestamps) and imports neither torch,
deepspeed nor kubernetes.

Pod sizing (memory, CPU, /dev/shm, grace period) lives in launcher/sizing.py, the launch options
and their validation in launcher/render_options.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from evaclip.config import CheckpointConfig, DataConfig, RunConfig
from launcher import names
from launcher.fabric import FabricRequest
from launcher.fabric import resolve as resolve_fabric
from launcher.flavours import JOBSET_REPLICATED_JOB, workload_by_flavor
from launcher.render_options import FLAVORS, Flavor, RenderOptions
from launcher.sizing import (
    PlanInputs,
    Sizing,
    checkpoint_bytes_per_node,
    inputs_from_estimate,
    size_pod,
)
from launcher.slurm_script import SCRIPT_FILE, job_dir, render_script
from launcher.templating import render_template
from planner.data_pipeline import loader_workers_for
from planner.deepspeed_config import deepspeed_config
from planner.errors import EvaplanError

__all__ = [
    "FLAVORS",
    "JOB_LABEL",
    "Flavor",
    "PlanInputs",
    "RenderOptions",
    "Rendered",
    "Sizing",
    "checkpoint_bytes_per_node",
    "inputs_from_estimate",
    "pod_selector",
    "render",
]

# The label on every object and every pod of a job: `status`, `logs` and `stop` select pods with
# `evaplan.io/job=<name>` whatever the flavour (pod_selector()).
JOB_LABEL = "evaplan.io/job"
FLAVOR_LABEL = "evaplan.io/flavor"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # Kueue docs, "Run a Kubernetes Job"
MULTUS_NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"  # Multus CNI, secondary networks (SR-IOV)
# The Indexed Job controller annotates each pod with its index (Kubernetes docs, "Job" → completion mode).
COMPLETION_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"

CONFIG_MOUNT = "/etc/evaplan"  # the ConfigMap's mount; the trainer's flags name files under it
CHECKPOINT_MOUNT = "/checkpoints"
OUTPUT_MOUNT = "/output"
NVME_MOUNT = "/local_nvme"
DATA_MOUNT = "/data"  # --data-pvc, read-only
DS_CONFIG_FILE = "ds_config.json"
RUN_CONFIG_FILE = "run_config.json"
# Kubernetes caps a ConfigMap's data at 1 MiB (MaxSecretSize, applied to ConfigMaps too).
CONFIGMAP_MAX_BYTES = 1024 * 1024
# evaclip.train exits with this code on a configuration error (the CLI convention of
# planner/errors.py: user error → 2); the Job's podFailurePolicy fails fast on it.
CONFIG_ERROR_EXIT_CODE = 2
# The trainer's user and group in every pod (runAsNonRoot needs a numeric non-root uid when the
# image does not name one; 1000 is the first regular user on Debian/Ubuntu-based images, the base
# of the PyTorch and ROCm images). fsGroup gives that group the checkpoint and output volumes.
POD_USER_ID = 1000
POD_GROUP_ID = 1000


def build_run_config(inputs: PlanInputs, opts: RenderOptions, data_workers: int) -> RunConfig:
    """The trainer's run config: the model's published recipe, laid out by the plan.

    total_steps = ceil(samples / global batch); warmup is the recipe's, capped below total_steps.
    """
    model, plan, training, recipe = inputs.model, inputs.plan, inputs.training, inputs.model.recipe
    if plan.global_batch != training.global_batch:
        raise EvaplanError(
            f"the plan's global batch {plan.global_batch} = {plan.micro_batch} micro × {plan.grad_accum} "
            f"accumulation × {plan.world_size} GPUs differs from the training's {training.global_batch}",
            hint="re-plan with a global batch the layout reaches",
        )
    total_steps = math.ceil(training.samples / plan.global_batch)
    data = (
        DataConfig(kind="webdataset", url=opts.data_url, num_workers=data_workers)
        if opts.data_url
        else DataConfig(kind="synthetic", num_workers=data_workers)
    )
    slurm_dir = job_dir(opts) if opts.flavor == "slurm" else None  # the job's folder on the shared filesystem
    checkpoint = CheckpointConfig(
        dir=f"{slurm_dir}/checkpoints" if slurm_dir else CHECKPOINT_MOUNT,
        every_s=training.checkpoint_every_s or inputs.checkpoint_every_s,
        keep=training.checkpoints_kept,
        s3_uri=opts.checkpoint_s3_uri,
    )
    return RunConfig(
        job_name=opts.job_name,
        model=model,
        hardware=inputs.hardware,
        total_steps=total_steps,
        image_size=training.image_size,
        patch_dropout=training.patch_dropout,
        grad_ckpt=plan.grad_ckpt,
        local_loss=plan.local_loss,
        gather_with_grad=plan.gather_with_grad,
        optimizer=resolve_optimizer(inputs, opts),
        image_lr=recipe.image_lr,
        text_lr=recipe.text_lr,
        image_layer_decay=recipe.image_layer_decay,
        text_layer_decay=recipe.text_layer_decay,
        weight_decay=recipe.weight_decay,
        betas=recipe.betas,
        eps=recipe.eps,
        warmup_steps=min(recipe.warmup_steps, total_steps - 1),
        grad_clip=recipe.grad_clip,
        data=data,
        checkpoint=checkpoint,
        output_dir=f"{slurm_dir}/output" if slurm_dir else OUTPUT_MOUNT,
        comms_logger=opts.comms_logger,
    )


def resolve_optimizer(inputs: PlanInputs, opts: RenderOptions) -> str:
    """The optimizer the run uses: --optimizer, else the recipe's, except that an offloaded optimizer
    runs DeepSpeedCPUAdam (AdamW): DeepSpeed ships CPU Adam, Adagrad and Lion but no CPU LAMB
    (deepspeed/ops/adam/cpu_adam.py and siblings), so a LAMB recipe cannot keep LAMB when offloading."""
    if opts.optimizer:
        return opts.optimizer
    if inputs.model.recipe.optimizer == "lamb" and inputs.plan.offload_optimizer != "none":
        return "adamw"
    return inputs.model.recipe.optimizer


def build_ds_config(inputs: PlanInputs, opts: RenderOptions) -> dict[str, Any]:
    recipe = inputs.model.recipe
    uses_nvme = "nvme" in (inputs.plan.offload_optimizer, inputs.plan.offload_param)
    if uses_nvme and not opts.nvme_host_path:
        raise EvaplanError(
            "the plan offloads to NVMe, which needs a local NVMe folder on every node",
            hint="pass --nvme-host-path /local_nvme (a host folder on the NVMe drives)",
        )
    return deepspeed_config(
        inputs.plan,
        grad_clip=recipe.grad_clip,
        comms_logger=opts.comms_logger,
        # A Slurm job sees the node's folder itself; a pod sees it mounted at NVME_MOUNT.
        nvme_path=(opts.nvme_host_path if opts.flavor == "slurm" else NVME_MOUNT) if uses_nvme else None,
        optimizer=resolve_optimizer(inputs, opts),
        lr=recipe.image_lr,
        betas=recipe.betas,
        eps=recipe.eps,
        weight_decay=recipe.weight_decay,
    )


# --------------------------------------------------------------------------- manifests
def pod_selector(job_name: str) -> str:
    """The label selector that finds every pod of a job, whatever the flavour."""
    return f"{JOB_LABEL}={job_name}"


def common_labels(opts: RenderOptions) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "evaplan",
        "app.kubernetes.io/name": "evaclip",
        FLAVOR_LABEL: opts.flavor,
        JOB_LABEL: opts.job_name,
    }


def _env(inputs: PlanInputs, opts: RenderOptions, sizing: Sizing) -> list[dict[str, str]]:
    env: dict[str, dict[str, str]] = {}

    def put(name: str, value: str | None = None, field_path: str | None = None) -> None:
        env[name] = {"name": name, "value": value, "field_path": field_path}

    flavour = workload_by_flavor(opts.flavor)
    if flavour.node_rank_from_completion_index:
        put("NODE_RANK", field_path=COMPLETION_INDEX_FIELD)
    if not flavour.controller_sets_unbuffered:
        put("PYTHONUNBUFFERED", "1")
    for key, value in trainer_env(inputs, opts, sizing):
        put(key, value)
    return list(env.values())


def trainer_env(inputs: PlanInputs, opts: RenderOptions, sizing: Sizing) -> list[tuple[str, str]]:
    """The trainer's environment every flavour sets (Kubernetes pods and Slurm scripts alike): threads,
    NCCL/RCCL, the fabric's variables, the vendor's, then the user's --env (last word wins)."""
    hw = inputs.hardware
    env: dict[str, str] = {}

    def put(name: str, value: str) -> None:
        env[name] = value

    put("OMP_NUM_THREADS", str(sizing.omp_threads))
    # One set of names for both vendors: RCCL reads the NCCL_* variables too
    # (https://rocm.docs.amd.com/projects/rccl/en/latest/api-reference/env-variables.html).
    put("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    put("NCCL_DEBUG", opts.nccl_debug)
    if opts.socket_ifname:
        put("NCCL_SOCKET_IFNAME", opts.socket_ifname)
        put("GLOO_SOCKET_IFNAME", opts.socket_ifname)
    net = fabric_for(inputs, opts)
    for key, value in net.env:  # launcher/fabric.py: EFA/libfabric or NCCL_IB_HCA
        put(key, value)
    if net.roce:
        put("NCCL_IB_GID_INDEX", "3")  # RoCE v2 GID (NCCL environment variables)
    if hw.vendor == "amd":
        put("HSA_FORCE_FINE_GRAIN_PCIE", "1")
        put("GPU_MAX_HW_QUEUES", "2")
        put("RCCL_MSCCL_ENABLE", "0")
        put("TORCH_NCCL_HIGH_PRIORITY", "1")
    for key, value in opts.env:  # the user's last word, in the order given
        put(key, value)
    return list(env.items())


# The user's fabric flags that launcher/fabric.py resolve takes under their own names.
_FABRIC_FLAGS = ("rdma_resource", "rdma_per_node", "ib_hca", "roce")


def fabric_for(inputs: PlanInputs, opts: RenderOptions) -> FabricRequest:
    """The inter-node network this bundle requests (launcher/fabric.py)."""
    hw = inputs.hardware
    return resolve_fabric(
        inputs.fabric,
        inputs.offering,
        use_fabric=opts.fabric,
        **{k: getattr(opts, k) for k in _FABRIC_FLAGS},
        vendor=hw.vendor,
        nodes=inputs.plan.nodes,
        inter_node_gbps=hw.collective.inter_node_gbps.value,
        hardware=hw.name,
    )


# Every pod runs exactly this: torchrun with these rendezvous flags, then the bundled trainer on the
# ConfigMap's two files (launcher/pod_policy.py refuses any other command).
TORCHRUN_FLAGS = ("--nnodes=", "--nproc-per-node=", "--node-rank=", "--master-addr=", "--master-port=")
TRAINER_ARGS = (
    "-m",
    "evaclip.train",
    "--ds-config",
    f"{CONFIG_MOUNT}/{DS_CONFIG_FILE}",
    "--run-config",
    f"{CONFIG_MOUNT}/{RUN_CONFIG_FILE}",
)


def _command(inputs: PlanInputs, opts: RenderOptions) -> list[str]:
    plan = inputs.plan
    rank, addr, port = workload_by_flavor(opts.flavor).rendezvous(opts.job_name, opts.master_port)
    values = (plan.nodes, plan.gpus_per_node, rank, addr, port)
    return [
        "torchrun",
        *(f"{flag}{v}" for flag, v in zip(TORCHRUN_FLAGS, values, strict=True)),
        *TRAINER_ARGS,
    ]


def _pod(
    inputs: PlanInputs, opts: RenderOptions, sizing: Sizing, replica_type: str | None = None
) -> dict[str, Any]:
    hw, plan = inputs.hardware, inputs.plan
    k8s = hw.kubernetes
    if k8s is None:
        raise EvaplanError(
            f"hardware profile '{hw.name}' has no kubernetes section (GPU resource, node label)",
            hint="add kubernetes: {gpu_resource, product_label, product} to its profile",
        )
    labels = common_labels(opts)
    if replica_type:
        labels["evaplan.io/replica-type"] = replica_type.lower()
    resources: dict[str, str | int] = {
        "cpu": str(sizing.cpu),
        "memory": f"{sizing.memory_gib}Gi",
        k8s.gpu_resource: plan.gpus_per_node,
    }
    net = fabric_for(inputs, opts)
    if net.resource:
        resources[net.resource] = net.count
    ipc_lock = opts.ipc_lock if opts.ipc_lock is not None else net.ipc_lock
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "mount_path": CONFIG_MOUNT,
            "read_only": True,
            "kind": "configMap",
            "source": f"{opts.job_name}-config",
        },
        {
            "name": "dshm",
            "mount_path": "/dev/shm",
            "kind": "emptyDir",
            "medium": "Memory",
            "size_limit": f"{sizing.shm_gib}Gi",
        },
        {
            "name": "checkpoints",
            "mount_path": CHECKPOINT_MOUNT,
            "kind": "persistentVolumeClaim" if opts.checkpoint_pvc else "emptyDir",
            "source": opts.checkpoint_pvc,
        },
        {"name": "output", "mount_path": OUTPUT_MOUNT, "kind": "emptyDir"},
    ]
    if opts.data_pvc:
        volumes.append(
            {
                "name": "data",
                "mount_path": DATA_MOUNT,
                "read_only": True,
                "kind": "persistentVolumeClaim",
                "source": opts.data_pvc,
            }
        )
    if opts.nvme_host_path and "nvme" in (plan.offload_optimizer, plan.offload_param):
        volumes.append(
            {"name": "nvme", "mount_path": NVME_MOUNT, "kind": "hostPath", "source": opts.nvme_host_path}
        )
    # Every key present: the templates run under StrictUndefined.
    volumes = [{"read_only": False, "source": None, "medium": None, "size_limit": None, **v} for v in volumes]
    flavour = workload_by_flavor(opts.flavor)
    return {
        "labels": labels,
        "annotations": {MULTUS_NETWORKS_ANNOTATION: opts.network_annotation}
        if opts.network_annotation
        else {},
        "restart_policy": flavour.pod_restart_policy,
        "subdomain": flavour.pod_subdomain(opts.job_name),
        "termination_grace_period_s": sizing.termination_grace_period_s,
        "service_account": opts.service_account,
        "priority_class": opts.priority_class,
        "image_pull_secret": opts.image_pull_secret,
        "node_selector": {k8s.product_label: k8s.product},
        "tolerations": [{"key": k8s.taint, "effect": "NoSchedule"}] if k8s.taint else [],
        "container_name": flavour.container_name,
        "image": opts.image,
        "image_pull_policy": opts.image_pull_policy,
        "command": _command(inputs, opts),
        "port_name": flavour.port_name,
        "port": opts.master_port,
        "env": _env(inputs, opts, sizing),
        "env_from_secrets": [opts.s3_secret] if opts.s3_secret else [],
        "requests": resources,
        "limits": resources,
        "capabilities": ["IPC_LOCK"] if ipc_lock else [],  # every other capability is dropped
        "security": {"run_as_user": POD_USER_ID, "run_as_group": POD_GROUP_ID, "fs_group": POD_GROUP_ID},
        "volumes": volumes,
    }


@dataclass(frozen=True)
class Rendered:
    """The bundle's file contents, exactly as written."""

    files: dict[str, str]  # file name → text
    job_name: str
    namespace: str
    flavor: str
    sizing: Sizing
    warnings: tuple[str, ...] = ()
    # The values every pod template was rendered from (`_pod`): the bundle records what they
    # promise (launcher/pod_policy.py) so that `launch` can hold each pod to them.
    pod: dict[str, Any] = field(default_factory=dict)
    env: tuple[tuple[str, str], ...] = ()  # the user's --env, for the ranks of a local run
    env_not_secret: tuple[str, ...] = ()  # --env-not-secret: names the user vouched for


def render(inputs: PlanInputs, opts: RenderOptions) -> Rendered:
    """Every file of a bundle, as text. Deterministic: the same inputs give the same bytes."""
    plan = inputs.plan
    names.check_job_name(opts.job_name, opts.flavor, plan.nodes)
    if inputs.hardware.gpus_per_node != plan.gpus_per_node:
        raise EvaplanError(
            f"the plan uses {plan.gpus_per_node} GPUs per node but a {inputs.hardware.name} node has "
            f"{inputs.hardware.gpus_per_node}",
            hint="one pod takes a whole node: plan with the hardware's GPUs per node",
        )
    # The workers the estimate assumed (its data-loading floor: `--data-workers`), for WebDataset
    # shards; synthetic data is made in the training process and needs none.
    planned = loader_workers_for(inputs.hardware, inputs.training.loader_workers)
    data_workers = opts.data_workers if opts.data_workers is not None else (planned if opts.data_url else 0)
    sizing = size_pod(inputs, opts, data_workers)
    ds_config = build_ds_config(inputs, opts)
    run_config = build_run_config(inputs, opts, data_workers)

    files: dict[str, str] = {}
    files[DS_CONFIG_FILE] = render_template("deepspeed.json.j2", ds_config=ds_config)
    files[RUN_CONFIG_FILE] = json.dumps(run_config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    files["plan.json"] = json.dumps(inputs.estimate_json, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if opts.flavor == "slurm":
        script, why = render_script(
            inputs, opts, sizing, trainer_env(inputs, opts, sizing), DS_CONFIG_FILE, RUN_CONFIG_FILE
        )
        files[SCRIPT_FILE] = script
        return Rendered(
            files=files,
            job_name=opts.job_name,
            namespace=opts.namespace,
            flavor=opts.flavor,
            sizing=replace(sizing, lines=(*sizing.lines, *why)),
            warnings=tuple(_warnings(inputs, opts, sizing)),
            env=opts.env,
            env_not_secret=opts.env_not_secret,
        )

    job = _workload_values(inputs, opts, sizing)
    file_texts = {"ds_config": files[DS_CONFIG_FILE], "run_config": files[RUN_CONFIG_FILE]}
    config_bytes = sum(len(t.encode()) for t in file_texts.values())
    if config_bytes > CONFIGMAP_MAX_BYTES:
        raise EvaplanError(
            f"the ConfigMap would hold {config_bytes:,} bytes, over Kubernetes' limit of "
            f"{CONFIGMAP_MAX_BYTES:,}",
            hint="report this: the run config should not be this large",
        )
    pod = _pod(inputs, opts, sizing)
    files["manifests.yaml"] = render_template(
        f"k8s/{opts.flavor}.yaml.j2", job=job, pod=pod, files=file_texts
    )
    files["rbac.yaml"] = render_template("k8s/rbac.yaml.j2", rbac=_rbac_values(opts))
    warnings = _warnings(inputs, opts, sizing)
    if plan.nodes > 1 and not (opts.checkpoint_s3_uri or opts.checkpoint_pvc):
        # evaclip/checkpoint.py: across nodes the checkpoint folder must be a shared filesystem or S3.
        warnings.append(
            f"{plan.nodes} nodes with neither --checkpoint-s3-uri nor --checkpoint-pvc: each pod "
            "checkpoints to its own emptyDir, which a restart loses, so the run cannot resume"
        )
    return Rendered(
        files=files,
        job_name=opts.job_name,
        namespace=opts.namespace,
        flavor=opts.flavor,
        sizing=sizing,
        warnings=tuple(warnings),
        pod=pod,
        env=opts.env,
        env_not_secret=opts.env_not_secret,
    )


def _workload_values(inputs: PlanInputs, opts: RenderOptions, sizing: Sizing) -> dict[str, Any]:
    """What the flavour's workload template reads of the job: names, labels, size, restarts and
    (PyTorchJob) its replicas' pods."""
    plan = inputs.plan
    labels = common_labels(opts)
    job = {
        "name": opts.job_name,
        "namespace": opts.namespace,
        "labels": labels,
        "workload_labels": {**labels, **({KUEUE_QUEUE_LABEL: opts.queue} if opts.queue else {})},
        "suspend": opts.queue is not None,  # Kueue admits (unsuspends) queued workloads
        "config_map": f"{opts.job_name}-config",
        "selector_key": JOB_LABEL,
        "nodes": plan.nodes,
        "gpus_per_node": plan.gpus_per_node,
        "max_restarts": opts.max_restarts,
        "config_error_exit_code": CONFIG_ERROR_EXIT_CODE,
        "replicated_job": JOBSET_REPLICATED_JOB,
    }
    if opts.flavor == "indexed-job":
        # One node failure can fail every pod (the others' collectives time out), so the budget is
        # max_restarts gang failures; preemptions are ignored by the podFailurePolicy.
        job["backoff_limit"] = opts.max_restarts * plan.nodes
    elif opts.flavor == "pytorchjob":
        job["backoff_limit"] = opts.max_restarts * plan.nodes
        job["replicas"] = [{"type": "Master", "count": 1, "pod": _pod(inputs, opts, sizing, "Master")}]
        if plan.nodes > 1:
            job["replicas"].append(
                {"type": "Worker", "count": plan.nodes - 1, "pod": _pod(inputs, opts, sizing, "Worker")}
            )
    return job


def _rbac_values(opts: RenderOptions) -> dict[str, Any]:
    """What rbac.yaml's template reads: the launcher's Role and the preflight's ClusterRole, bound
    to --rbac-subject."""
    kind, _, subject = opts.rbac_subject.partition(":")
    return {
        "role": "evaplan-launcher",
        # Cluster-scoped names must not collide between namespaces: the binding carries the namespace.
        "preflight_role": "evaplan-preflight",
        "preflight_binding": f"evaplan-preflight-{opts.namespace}",
        "namespace": opts.namespace,
        "subject_kind": kind,
        "subject_name": subject,
        "labels": {"app.kubernetes.io/managed-by": "evaplan", "app.kubernetes.io/name": "evaplan-launcher"},
    }


def _warnings(inputs: PlanInputs, opts: RenderOptions, sizing: Sizing) -> list[str]:
    """What every flavour warns about: the fabric, an optimizer swap, more CPUs than a node has."""
    warnings = list(fabric_for(inputs, opts).warnings)
    if resolve_optimizer(inputs, opts) != inputs.model.recipe.optimizer and not opts.optimizer:
        warnings.append(
            f"the recipe's {inputs.model.recipe.optimizer.upper()} has no DeepSpeed CPU implementation, "
            f"so the offloaded optimizer runs AdamW (DeepSpeedCPUAdam); pass --optimizer to choose"
        )
    node_cores = inputs.hardware.host_cpu_cores.value
    if sizing.cpu > node_cores and opts.cpu_per_node is None:
        # The profile's host cores are what a node offers; a pod asking for more is never scheduled
        # unless the nodes really have more (hyper-threads count as CPUs in Kubernetes).
        warnings.append(
            f"each pod requests {sizing.cpu} CPUs, more than the {node_cores:g} host cores of a "
            f"{inputs.hardware.name} node in its profile: lower --data-workers (or set --cpu-per-node) "
            "unless the nodes have more CPUs than the profile says"
        )
    return warnings
