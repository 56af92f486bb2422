"""The rendered bundle: valid Kubernetes objects for every flavour and vendor, the DeepSpeed config
DeepSpeed itself accepts, sizes from the plan, determinism, and user strings kept literal."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from launcher.backends.kube_pods import pod_templates
from launcher.render import (
    CHECKPOINT_MOUNT,
    FLAVORS,
    JOB_LABEL,
    checkpoint_bytes_per_node,
    pod_selector,
    render,
)
from planner.data_pipeline import default_loader_workers
from planner.errors import EvaplanError, InfeasibleError

VARIANTS = [(hw, flavor) for hw in ("h100-sxm", "mi300x") for flavor in FLAVORS]


def _docs(rendered) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered.files["manifests.yaml"]) if d]


def _containers(docs: list[dict]) -> list[dict]:
    return [c for d in docs for t, _ in pod_templates(d) for c in t["spec"]["containers"]]


@pytest.mark.parametrize(("hardware", "flavor"), VARIANTS)
def test_every_object_validates(hardware, flavor, validate_object, make_inputs, make_options):
    opts = make_options(
        flavor=flavor,
        rdma_resource="rdma/rdma_shared_device_a",
        queue="team-a",
        priority_class="training-high",
        s3_secret="s3-credentials",
        checkpoint_s3_uri="s3://acme-ckpt/eva8b",
        network_annotation="sriov-a,sriov-b",
        socket_ifname="eth0",
        ib_hca="mlx5_0,mlx5_1",
        service_account="trainer",
    )
    r = render(make_inputs(hardware), opts)
    docs = _docs(r)
    kinds = [d["kind"] for d in docs]
    expected = {
        "indexed-job": ["ConfigMap", "Service", "Job"],
        "pytorchjob": ["ConfigMap", "PyTorchJob"],
        "jobset": ["ConfigMap", "JobSet"],
    }[flavor]
    assert kinds == expected  # creation order: the ConfigMap before the pods that mount it
    for d in docs:
        validate_object(d)
        assert d["metadata"]["labels"][JOB_LABEL] == "eva8b-run1"
        assert d["metadata"]["namespace"] == "ml"
    for d in yaml.safe_load_all(r.files["rbac.yaml"]):
        validate_object(d)


def test_validator_is_not_vacuous(validate_object, make_inputs, make_options):
    docs = _docs(render(make_inputs(), make_options(flavor="jobset")))
    bad = json.loads(json.dumps(docs[-1]))
    pod_templates(bad)[0][0]["spec"]["containers"][0]["ports"][0]["containerPort"] = "29500"
    with pytest.raises(Exception, match="29500"):
        validate_object(bad)
    bad = json.loads(json.dumps(docs[-1]))
    pod_templates(bad)[0][0]["spec"]["containerz"] = []
    with pytest.raises(Exception, match="containerz"):
        validate_object(bad)
    job = _docs(render(make_inputs(), make_options()))[-1]
    job["spec"]["completionMode"] = 3
    with pytest.raises(Exception):  # noqa: B017 - any validation error will do
        validate_object(job)


@pytest.mark.parametrize(("hardware", "flavor"), VARIANTS)
def test_pod_carries_hardware_and_sizes(hardware, flavor, make_inputs, make_options):
    inputs = make_inputs(hardware)
    r = render(inputs, make_options(flavor=flavor, rdma_resource="rdma/ib", rdma_per_node=2))
    docs = _docs(r)
    templates = [t for d in docs for t, _ in pod_templates(d)]
    assert templates
    k8s = inputs.hardware.kubernetes
    for t in templates:
        spec = t["spec"]
        assert t["metadata"]["labels"][JOB_LABEL] == "eva8b-run1"
        assert spec["nodeSelector"] == {k8s.product_label: k8s.product}
        assert spec["tolerations"] == [{"key": k8s.taint, "operator": "Exists", "effect": "NoSchedule"}]
        (c,) = spec["containers"]
        res = c["resources"]
        assert res["limits"] == res["requests"]
        assert res["limits"][k8s.gpu_resource] == 8
        assert res["limits"]["rdma/ib"] == 2
        assert c["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
        assert res["limits"]["memory"] == f"{r.sizing.memory_gib}Gi"
        shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{r.sizing.shm_gib}Gi"}
        # tmpfs pages count against the memory limit, so the limit covers the plan's host RAM and shm
        assert r.sizing.memory_gib == math.ceil(96.0 + r.sizing.shm_gib)
        assert spec["terminationGracePeriodSeconds"] == r.sizing.termination_grace_period_s
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
        if hardware == "mi300x":
            assert env["HSA_FORCE_FINE_GRAIN_PCIE"] == "1" and env["NCCL_IB_GID_INDEX"] == "3"
            assert env["RCCL_MSCCL_ENABLE"] == "0" and env["GPU_MAX_HW_QUEUES"] == "2"
        else:
            assert "HSA_FORCE_FINE_GRAIN_PCIE" not in env and "NCCL_IB_GID_INDEX" not in env
        cmd = c["command"]
        assert cmd[:3] == ["torchrun", "--nnodes=4", "--nproc-per-node=8"]
        assert cmd[-5:] == [
            "evaclip.train",
            "--ds-config",
            "/etc/evaplan/ds_config.json",
            "--run-config",
            "/etc/evaplan/run_config.json",
        ]


def test_rendezvous_addresses_match_each_flavours_dns(make_inputs, make_options):
    def addr(flavor):
        c = _containers(_docs(render(make_inputs(), make_options(flavor=flavor))))[0]
        return next(a for a in c["command"] if a.startswith("--master-addr=")).split("=", 1)[1]

    # Indexed Job: hostname <job>-<index>, subdomain = the headless Service.
    assert addr("indexed-job") == "eva8b-run1-0.eva8b-run1"
    # JobSet: <jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>.
    assert addr("jobset") == "eva8b-run1-node-0-0.eva8b-run1"
    assert addr("pytorchjob") == "$(PET_MASTER_ADDR)"  # injected by the training operator
    docs = _docs(render(make_inputs(), make_options(flavor="indexed-job")))
    svc, job = docs[1], docs[2]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert job["spec"]["template"]["spec"]["subdomain"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"] == {JOB_LABEL: "eva8b-run1"}
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4


def test_restart_policies_and_kueue(make_inputs, make_options):
    js = _docs(render(make_inputs(), make_options(flavor="jobset", max_restarts=5, queue="team-a")))[-1]
    assert js["spec"]["failurePolicy"] == {"maxRestarts": 5}
    assert js["spec"]["suspend"] is True
    assert js["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    pj = _docs(render(make_inputs(), make_options(flavor="pytorchjob", max_restarts=2)))[-1]
    assert pj["spec"]["runPolicy"]["backoffLimit"] == 2 * 4
    assert pj["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    assert pj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert "suspend" not in pj["spec"]["runPolicy"]
    one = _docs(
        render(make_inputs(nodes=1, micro_batch=32, grad_accum=2), make_options(flavor="pytorchjob"))
    )[-1]
    assert list(one["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    job = _docs(render(make_inputs(), make_options(priority_class="prod")))[-1]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "prod"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_secrets_only_by_reference(make_inputs, make_options):
    text = render(make_inputs(), make_options(s3_secret="s3-credentials")).files["manifests.yaml"]
    (c,) = _containers(_docs(render(make_inputs(), make_options(s3_secret="s3-credentials"))))
    assert c["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert "AWS_SECRET_ACCESS_KEY" not in text and 'kind: "Secret"' not in text


def test_configmap_holds_the_bundle_files_byte_for_byte(make_inputs, make_options):
    r = render(make_inputs("mi300x"), make_options(flavor="jobset"))
    cm = _docs(r)[0]
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "eva8b-run1-config"
    assert cm["data"]["ds_config.json"] == r.files["ds_config.json"]
    assert cm["data"]["run_config.json"] == r.files["run_config.json"]


def test_run_config_from_recipe_and_plan(make_inputs, make_options):
    inputs = make_inputs()
    r = render(inputs, make_options(data_url="s3://acme-data/laion", checkpoint_s3_uri="s3://acme-ckpt/x"))
    rc = json.loads(r.files["run_config.json"])
    assert rc["total_steps"] == math.ceil(1e8 / inputs.plan.global_batch)
    assert rc["image_lr"] == inputs.model.recipe.image_lr and rc["optimizer"] == "lamb"
    assert rc["data"] == {
        "kind": "webdataset",
        "url": "s3://acme-data/laion",
        "num_workers": default_loader_workers(inputs.hardware),
        "seed": 0,
        "synthetic_classes": 16,
    }
    assert rc["checkpoint"]["dir"] == CHECKPOINT_MOUNT and rc["checkpoint"]["s3_uri"] == "s3://acme-ckpt/x"
    assert rc["model"]["name"] == "eva-clip-8b" and rc["job_name"] == "eva8b-run1"


def test_rendering_is_deterministic(make_inputs, make_options):
    a = render(make_inputs("mi300x"), make_options(flavor="pytorchjob", env=(("B", "2"), ("A", "1"))))
    b = render(make_inputs("mi300x"), make_options(flavor="pytorchjob", env=(("B", "2"), ("A", "1"))))
    assert a.files == b.files


def test_grace_period_formula(make_inputs, make_options):
    inputs = make_inputs(nodes=4, zero_stage=3)
    psi = inputs.params
    assert checkpoint_bytes_per_node(psi, inputs.plan) == pytest.approx(14 * psi / 4)
    z1 = make_inputs(nodes=4, zero_stage=1).plan
    assert checkpoint_bytes_per_node(psi, z1) == pytest.approx(2 * psi + 12 * psi / 4)
    local = render(inputs, make_options()).sizing.termination_grace_period_s
    ckpt = 14 * psi / 4
    assert local == max(120, math.ceil(2 * ckpt / 34e9 + 4.0 + 60))
    s3 = render(inputs, make_options(checkpoint_s3_uri="s3://b-1/x", s3_upload_gbps=0.5)).sizing
    assert s3.termination_grace_period_s == math.ceil(2 * (ckpt / 34e9 + ckpt / 0.5e9) + 4.0 + 60)


def test_offload_adds_cpu_and_host_memory_must_fit(make_inputs, make_options):
    plain = render(make_inputs(zero_stage=2), make_options()).sizing
    with pytest.raises(EvaplanError, match="no CPU LAMB"):  # LAMB asked for explicitly: refused
        render(make_inputs(zero_stage=2, offload_optimizer="cpu"), make_options(optimizer="lamb"))
    # The 8B recipe's LAMB, not asked for: the offloaded optimizer runs DeepSpeedCPUAdam, with a warning.
    switched = render(make_inputs(zero_stage=2, offload_optimizer="cpu"), make_options())
    assert json.loads(switched.files["ds_config.json"])["optimizer"]["type"] == "AdamW"
    assert json.loads(switched.files["run_config.json"])["optimizer"] == "adamw"
    assert any("no DeepSpeed CPU implementation" in w for w in switched.warnings)
    assert not any(
        "CPU implementation" in w for w in render(make_inputs(zero_stage=2), make_options()).warnings
    )
    offload = render(
        make_inputs(zero_stage=2, offload_optimizer="cpu"), make_options(optimizer="adamw")
    ).sizing
    assert offload.cpu == plain.cpu + 8 * 4 and offload.omp_threads == 4
    inputs = make_inputs()
    too_big = type(inputs)(**{**inputs.__dict__, "host_ram_per_node_gib": 4000.0})
    with pytest.raises(InfeasibleError, match="4008 GiB of host memory but nodes have 2048 GiB"):
        render(too_big, make_options())


def test_nvme_offload_needs_a_host_path(make_inputs, make_options, validate_object):
    inputs = make_inputs(zero_stage=3, offload_optimizer="nvme")
    with pytest.raises(EvaplanError, match="--nvme-host-path"):
        render(inputs, make_options(optimizer="adamw"))
    r = render(inputs, make_options(nvme_host_path="/local_nvme", optimizer="adamw"))
    (t,) = [t for d in _docs(r) for t, _ in pod_templates(d)]
    assert {"name": "nvme", "hostPath": {"path": "/local_nvme", "type": "DirectoryOrCreate"}} in t["spec"][
        "volumes"
    ]
    for d in _docs(r):
        validate_object(d)
    assert (
        json.loads(r.files["ds_config.json"])["zero_optimization"]["offload_optimizer"]["nvme_path"]
        == "/local_nvme"
    )


def test_pod_selector():
    assert pod_selector("eva8b-run1") == "evaplan.io/job=eva8b-run1"


def test_rbac_for_a_service_account_and_pvc_checkpoints(make_inputs, make_options, validate_object):
    r = render(
        make_inputs(),
        make_options(
            rbac_subject="ServiceAccount:evaplan",
            checkpoint_pvc="ckpt-pvc",
            data_pvc="laion",
            data_url="/data/laion",
        ),
    )
    role, binding, cluster_role, cluster_binding = list(yaml.safe_load_all(r.files["rbac.yaml"]))
    for d in (role, binding, cluster_role, cluster_binding):
        validate_object(d)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "evaplan", "namespace": "ml"}]
    assert cluster_binding["subjects"] == binding["subjects"]
    assert not any("secrets" in rule["resources"] for rule in role["rules"])
    # The cluster-wide part is read-only and only what the preflight lists.
    assert cluster_role["rules"] == [{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list"]}]
    assert cluster_binding["metadata"]["name"] == "evaplan-preflight-ml"
    (t,) = [t for d in _docs(r) for t, _ in pod_templates(d)]
    assert {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "ckpt-pvc"}} in t["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "laion", "readOnly": True}} in t["spec"][
        "volumes"
    ]
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in t["spec"]["containers"][0][
        "volumeMounts"
    ]
    for d in _docs(r):
        validate_object(d)


def test_warns_when_a_multi_node_run_cannot_resume(make_inputs, make_options):
    rdma = {"rdma_resource": "rdma/ib"}  # a fabric, so that only the checkpoint warning is left
    assert "cannot resume" in render(make_inputs(nodes=2), make_options(**rdma)).warnings[0]
    assert render(make_inputs(nodes=2), make_options(checkpoint_s3_uri="s3://b-1/x", **rdma)).warnings == ()
    assert render(make_inputs(nodes=1), make_options()).warnings == ()
