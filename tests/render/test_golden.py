"""Golden bundles: one H100 and one MI300X bundle per flavour, compared byte for byte.

Regenerate after an intended change with:
    EVAPLAN_UPDATE_GOLDEN=1 .venv/bin/pytest tests/render/test_golden.py
and review the diff (git diff tests/render/golden) like any other code change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.render import FLAVORS, render

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("EVAPLAN_UPDATE_GOLDEN") == "1"


def _compare(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    if not path.is_file():
        pytest.fail(f"golden file {path} is missing; create it with EVAPLAN_UPDATE_GOLDEN=1")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, (
        f"{name} differs from its golden file; if intended, rerun with EVAPLAN_UPDATE_GOLDEN=1"
    )


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("hardware", ["h100-sxm", "mi300x"])
def test_golden_bundle(hardware, flavor, make_inputs, make_options):
    opts = make_options(
        flavor=flavor,
        rdma_resource="rdma/rdma_shared_device_a",
        socket_ifname="eth0",
        s3_secret="s3-credentials",
        checkpoint_s3_uri="s3://acme-checkpoints/eva8b-run1",
        data_url="s3://acme-data/laion2b-shards",
        queue="ml-team",
        priority_class="training",
    )
    rendered = render(make_inputs(hardware, nodes=2, zero_stage=3, micro_batch=64, grad_accum=2), opts)
    _compare(f"{hardware}-{flavor}.manifests.yaml", rendered.files["manifests.yaml"])
    _compare(f"{hardware}-{flavor}.ds_config.json", rendered.files["ds_config.json"])
    if hardware == "h100-sxm" and flavor == "indexed-job":
        _compare("rbac.yaml", rendered.files["rbac.yaml"])


@pytest.mark.parametrize("hardware", ["h100-sxm", "mi300x"])
def test_golden_slurm_script(hardware, make_inputs, make_options):
    """The slurm flavour: job.sbatch (nodes, GPUs, CPUs and memory per task, --time, --signal,
    --requeue, the partition/account/QOS/constraint, the fabric's and vendor's environment, srun
    starting torchrun with a c10d rendezvous) and the DeepSpeed config from the same plan."""
    opts = make_options(
        flavor="slurm",
        work_dir="/shared/evaplan",
        partition="gpu",
        account="ml-team",
        qos="high",
        constraint="ib&nvme",
        time_limit_min=720,
        socket_ifname="ib0",
        checkpoint_s3_uri="s3://acme-checkpoints/eva8b-run1",
        data_url="s3://acme-data/laion2b-shards",
    )
    rendered = render(make_inputs(hardware, nodes=2, zero_stage=3, micro_batch=64, grad_accum=2), opts)
    assert sorted(rendered.files) == ["ds_config.json", "job.sbatch", "plan.json", "run_config.json"]
    _compare(f"{hardware}-slurm.job.sbatch", rendered.files["job.sbatch"])
    _compare(f"{hardware}-slurm.ds_config.json", rendered.files["ds_config.json"])
