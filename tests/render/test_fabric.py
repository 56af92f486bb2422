"""The bundle requests the offering's inter-node fabric by default (EFA on AWS, RDMA NICs on
InfiniBand/RoCE clouds) with its NCCL/libfabric environment, validates against the schemas, and warns
when the manifests cannot deliver the inter-node bandwidth the plan assumed."""

from __future__ import annotations

import pytest
import yaml

from launcher.render import render
from launcher.render_options import RenderOptions
from launcher.sizing import inputs_from_estimate
from planner import profiles as prof
from planner.choose import Request, choose


def _bundle(offering: str, nodes: int = 2, flavor: str = "indexed-job", **opts):
    off = prof.load_offering(offering)
    hw = prof.load_hardware(off.hardware)
    est = choose(prof.load_model("eva-clip-debug"), hw, Request(nodes=nodes), off)
    rendered = render(
        inputs_from_estimate(est),
        RenderOptions(job_name="fab", image="ghcr.io/acme/evaclip:1.0", flavor=flavor, **opts),
    )
    docs = list(yaml.safe_load_all(rendered.files["manifests.yaml"]))
    return rendered, docs


def _container(docs):
    job = next(d for d in docs if d["kind"] in ("Job", "JobSet", "PyTorchJob"))
    text = yaml.safe_dump(job)
    pod = job["spec"]["template"]["spec"] if job["kind"] == "Job" else None
    return pod["containers"][0] if pod else None, text


def _env(c) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c["env"]}


def test_aws_p5_requests_all_efa_interfaces_with_libfabric_env():
    r, docs = _bundle("aws-p5")
    c, _ = _container(docs)
    assert c["resources"]["limits"]["vpc.amazonaws.com/efa"] == 32
    assert c["resources"]["requests"]["vpc.amazonaws.com/efa"] == 32
    env = _env(c)
    assert env["FI_PROVIDER"] == "efa" and env["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert not any("GB/s" in w for w in r.warnings)


@pytest.mark.parametrize(
    "offering,resource,roce",
    [
        ("azure-nd-mi300x-v5", "rdma/rdma_shared_device_a", False),
        ("coreweave-h100", "rdma/ib", False),
        ("oci-bm-gpu-mi300x", "rdma/rdma_shared_device_a", True),
    ],
)
def test_infiniband_and_roce_offerings_request_rdma(offering, resource, roce):
    r, docs = _bundle(offering)
    c, _ = _container(docs)
    assert c["resources"]["limits"][resource] == 1
    assert "IPC_LOCK" in c["securityContext"]["capabilities"]["add"]
    env = _env(c)
    assert env["NCCL_IB_HCA"] == "mlx5"
    assert ("NCCL_IB_GID_INDEX" in env) is roce
    assert not any("GB/s" in w for w in r.warnings)


def test_warns_when_the_fabric_is_missing_or_turned_off():
    r, docs = _bundle("aws-p5", fabric=False)
    c, _ = _container(docs)
    assert "vpc.amazonaws.com/efa" not in c["resources"]["limits"]
    assert any("GB/s per GPU between nodes" in w and "--no-fabric" in w for w in r.warnings)
    r, _ = _bundle("tensorwave-mi300x")
    assert any("records no fabric" in w for w in r.warnings)
    r, _ = _bundle("gcp-a3-highgpu")
    assert any("no RDMA device plugin (tcp)" in w for w in r.warnings)
    r, _ = _bundle("tensorwave-mi300x", nodes=1)  # one node: no inter-node traffic, no warning
    assert not any("GB/s" in w for w in r.warnings)
    r, docs = _bundle("tensorwave-mi300x", rdma_resource="rdma/roce_a", rdma_per_node=2)
    c, _ = _container(docs)
    assert c["resources"]["limits"]["rdma/roce_a"] == 2 and not any("GB/s" in w for w in r.warnings)


@pytest.mark.parametrize("flavor", ["indexed-job", "pytorchjob", "jobset"])
def test_fabric_manifests_validate(flavor, validate_object):
    for offering in ("aws-p5", "azure-nd-mi300x-v5"):
        _, docs = _bundle(offering, flavor=flavor)
        for d in docs:
            validate_object(d)
