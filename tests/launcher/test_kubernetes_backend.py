"""The kubernetes backend against kmock: real HTTP, the real `kubernetes` client; the test plays
the controller by writing pods, statuses and scripted logs."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from launcher.backends.kube_api import Backoff, KubeApi
from launcher.backends.kubernetes import KubernetesBackend, pod_problem
from launcher.state import JobStore

kmock = pytest.importorskip("kmock")

NAMESPACE = "ml"  # the kubeconfig context's namespace (conftest.py)
FAST = Backoff(attempts=4, base_s=0.01, cap_s=0.02)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr("launcher.backends.kube_api.DEFAULT_BACKOFF", FAST)


@pytest.fixture
def make_bundle(bundle_factory):
    return bundle_factory


def _pod(
    name: str, index: int, *, phase: str = "Running", status: dict | None = None, job: str = "eva-test"
) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-27T10:00:00Z",
            "labels": {"evaplan.io/job": job, "batch.kubernetes.io/job-completion-index": str(index)},
        },
        "spec": {
            "nodeName": f"gpu-{index}",
            "containers": [{"name": "trainer", "resources": {"limits": {"nvidia.com/gpu": "8"}}}],
        },
        "status": {"phase": phase, "startTime": "2026-11-27T10:00:00Z", **(status or {})},
    }


@pytest.fixture
def launched(cli, cluster, kubeconfig, state_dir, tmp_path, make_bundle):
    cluster.add_gpu_node("gpu-0", 8)
    cluster.add_gpu_node("gpu-1", 8)
    bundle = make_bundle(tmp_path / "bundle")
    r = cli("launch", str(bundle), "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 0, r.output
    return bundle


def test_launch_creates_objects_once_in_order(launched, cluster, cli, kubeconfig):
    posts = [r for r in cluster.requests("POST", "/api") if not r.params.get("dryRun")]
    dry = [r for r in cluster.requests("POST", "/api") if r.params.get("dryRun") == "All"]
    manifests = [d for d in __import__("yaml").safe_load_all((launched / "manifests.yaml").read_text()) if d]
    assert [p.data["kind"] for p in posts] == [m["kind"] for m in manifests]  # each once, in creation order
    assert [p.data["kind"] for p in dry] == [m["kind"] for m in manifests]  # dry run first, for all
    assert set(cluster.objects("batch/v1/jobs")) == {(NAMESPACE, "eva-test")}
    rec = JobStore().get("eva-test")
    assert rec.namespace == NAMESPACE and rec.backend == "kubernetes"
    assert rec.plan["cost_basis"]["usd_per_node_hour"] == 55.04 and rec.plan["cost_basis"]["nodes"] == 2

    again = cli("launch", str(launched), "--kubeconfig", str(kubeconfig))
    assert again.exit_code == 2 and "already" in again.output and "--replace" in again.output
    assert len([r for r in cluster.requests("POST", "/apis/batch") if not r.params.get("dryRun")]) == 1


def test_dry_run_creates_and_records_nothing(cli, cluster, kubeconfig, state_dir, tmp_path, make_bundle):
    cluster.add_gpu_node("gpu-0", 8)
    cluster.add_gpu_node("gpu-1", 8)
    r = cli("launch", str(make_bundle(tmp_path / "b")), "--kubeconfig", str(kubeconfig), "--dry-run")
    assert r.exit_code == 0, r.output
    assert "accepted (dryRun=All): ConfigMap/eva-test-config, Service/eva-test, Job/eva-test" in r.output
    assert "gpu-0: 8/8 nvidia.com/gpu free" in r.output
    assert all(q.params.get("dryRun") == "All" for q in cluster.requests("POST", "/api"))
    assert cluster.objects("batch/v1/jobs") == {} and JobStore().find("eva-test") is None


def test_replace_deletes_then_recreates(launched, cluster, cli, kubeconfig):
    r = cli("launch", str(launched), "--kubeconfig", str(kubeconfig), "--replace")
    assert r.exit_code == 0, r.output
    deletes = cluster.requests("DELETE", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/eva-test")
    assert deletes and all(d.params.get("propagationPolicy") == "Foreground" for d in deletes)
    assert set(cluster.objects("batch/v1/jobs")) == {(NAMESPACE, "eva-test")}


def test_preflight_refuses_cluster_without_the_gpu(
    cli, cluster, kubeconfig, state_dir, tmp_path, make_bundle
):
    cluster.add_gpu_node("mi-0", 8, product="AMD_Instinct_MI300X_OAM")
    r = cli("launch", str(make_bundle(tmp_path / "b")), "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 2
    assert "no schedulable node carries nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3" in r.output
    assert "mi-0" in r.output
    assert not [q for q in cluster.requests("POST", "/api")]  # nothing created, not even a dry run


def test_preflight_prints_free_gpus_when_too_few(cli, cluster, kubeconfig, state_dir, tmp_path, make_bundle):
    cluster.add_gpu_node("gpu-0", 8)
    cluster.add_gpu_node("gpu-1", 8)
    busy = _pod("other-0", 0, job="someone-else")
    busy["spec"]["nodeName"] = "gpu-1"
    busy["spec"]["containers"][0]["resources"] = {"requests": {"nvidia.com/gpu": "4"}}
    cluster.put("v1/pods", "team-b", "other-0", busy)
    r = cli("launch", str(make_bundle(tmp_path / "b")), "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 2
    assert "needs 2 pods × 8 nvidia.com/gpu but only 1 fit" in r.output
    assert "gpu-0 8/8" in r.output and "gpu-1 4/8" in r.output


def test_preflight_counts_master_and_workers_together(
    cli, cluster, kubeconfig, state_dir, tmp_path, make_bundle
):
    cluster.do(
        lambda: cluster.handler.resources.__setitem__(
            "kubeflow.org/v1/pytorchjobs", kmock.ResourceInfo(kind="PyTorchJob", namespaced=True)
        )
    )
    cluster.add_gpu_node("gpu-0", 8)
    r = cli("launch", str(make_bundle(tmp_path / "b", flavor="pytorchjob")), "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 2 and "needs 2 pods × 8 nvidia.com/gpu but only 1 fit" in r.output


def _one_node_bundle(dest: Path, job_name: str, queue: str | None = None) -> Path:
    from launcher.bundle import write_bundle
    from launcher.render import RenderOptions, inputs_from_estimate, render
    from planner.choose import Request, choose
    from planner.profiles import load_hardware, load_model

    est = choose(load_model("eva-clip-debug", []), load_hardware("h100-sxm", []), Request(nodes=1))
    opts = RenderOptions(
        job_name=job_name, image="ghcr.io/acme/evaclip:1.0", namespace=NAMESPACE, queue=queue
    )
    return write_bundle(render(inputs_from_estimate(est, []), opts), dest)


def test_preflight_lets_kueue_queue_on_busy_gpus(cli, cluster, kubeconfig, state_dir, tmp_path):
    cluster.add_gpu_node("gpu-0", 8)
    cluster.put("v1/pods", "team-b", "other-0", _pod("other-0", 0, job="someone-else"))  # all 8 GPUs in use
    r = cli(
        "launch",
        str(_one_node_bundle(tmp_path / "q", "eva-q", queue="team-a")),
        "--kubeconfig",
        str(kubeconfig),
    )
    assert r.exit_code == 0, r.output  # created suspended; Kueue admits it when GPUs free up
    r = cli("launch", str(_one_node_bundle(tmp_path / "u", "eva-u")), "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 2 and "only 0 fit" in r.output


@pytest.mark.parametrize(
    ("status", "reason", "detail"),
    [
        (
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                    }
                ],
            },
            "Unschedulable",
            "Insufficient nvidia.com/gpu",
        ),
        (
            {
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "restartCount": 2,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                    }
                ]
            },
            "CrashLoopBackOff",
            "OOMKilled",
        ),
        (
            {
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "restartCount": 0,
                        "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                    }
                ]
            },
            "OOMKilled",
            "memory limit",
        ),
        (
            {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "state": {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": 'Back-off pulling image "ghcr.io/acme/evaclip:1.0"',
                            }
                        },
                    }
                ],
            },
            "ImagePullBackOff",
            "Back-off pulling",
        ),
        (
            {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."},
            "Evicted",
            "low on",
        ),
    ],
)
def test_status_maps_pod_failure_reasons(launched, cluster, cli, status, reason, detail):
    cluster.put("v1/pods", NAMESPACE, "eva-test-0-abc", _pod("eva-test-0-abc", 0))
    cluster.put("v1/pods", NAMESPACE, "eva-test-1-def", _pod("eva-test-1-def", 1, status=status))
    r = cli("status", "eva-test", "-o", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    ranks = {x["rank"]: x for x in doc["ranks"]}
    assert ranks[0]["reason"] is None and ranks[1]["reason"] == reason
    assert detail in (ranks[1]["message"] or "")
    assert pod_problem(_pod("x", 0)) == (None, None)
    text = cli("status", "eva-test").output
    assert reason in text and "rank" in text


def test_status_progress_eta_and_dollars_from_rank0_metrics(launched, cluster, cli):
    cluster.put("v1/pods", NAMESPACE, "eva-test-0-abc", _pod("eva-test-0-abc", 0))
    from evaclip.metrics import progress_line

    rec = {
        "step": 50,
        "samples_seen": 1600,
        "samples_per_s": 16.0,
        "loss": 1.2,
        "lr": 1e-3,
        "tflops_per_gpu": 0.5,
        "mfu": None,
        "peak_mem_bytes": 2**30,
        "step_time_s": 2.0,
    }
    log = (
        f"2026-11-27T10:00:01.000000000Z [evaclip] starting\n"
        f"2026-11-27T10:01:40.5Z {progress_line({**rec, 'step': 49, 'samples_per_s': 99.0}, 100)}\n"
        f"2026-11-27T10:01:42.5Z {progress_line(rec, 100)}\n"
    )
    cluster.do(
        lambda: (
            cluster.handler[f"/api/v1/namespaces/{NAMESPACE}/pods/eva-test-0-abc/log"]
            << kmock.headers({"Content-Type": "text/plain"})
            << log.encode()
        )
    )
    doc = json.loads(cli("status", "eva-test", "-o", "json").output)
    p = doc["progress"]
    assert p["step"] == 50 and p["total_steps"] == 100 and p["total_samples"] == 3200
    rate = 2 / (1 / 99.0 + 1 / 16.0)  # progress lines carry no clock: harmonic mean over the window
    assert p["samples_per_s"] == pytest.approx(rate)
    assert p["eta_s"] == pytest.approx((3200 - 1600) / rate)
    # spent = elapsed hours × 2 nodes × $55.04; projected adds ETA × the same rate
    assert p["spent_usd"] == pytest.approx(p["elapsed_s"] / 3600 * 2 * 55.04, rel=1e-6)
    assert p["projected_usd"] == pytest.approx(p["spent_usd"] + p["eta_s"] / 3600 * 2 * 55.04, rel=1e-6)
    planned = json.loads((launched / "plan.json").read_text())["cost"]["prices"][0]
    assert planned["pricing"] == "on_demand" and p["estimate_usd"] == planned["total_usd"]


def test_logs_merge_by_timestamp_and_filter_rank(launched, cluster, cli):
    for i in (0, 1):
        cluster.put("v1/pods", NAMESPACE, f"eva-test-{i}", _pod(f"eva-test-{i}", i))
    logs = {
        0: "2026-11-27T10:00:01Z a0\n2026-11-27T10:00:03.5Z a1\n",
        1: "2026-11-27T10:00:02.25Z b0\n2026-11-27T10:00:04Z b1\n",
    }
    for i, text in logs.items():
        cluster.do(
            lambda i=i, text=text: (
                cluster.handler[f"/api/v1/namespaces/{NAMESPACE}/pods/eva-test-{i}/log"]
                << kmock.headers({"Content-Type": "text/plain"})
                << text.encode()
            )
        )
    out = cli("logs", "eva-test").output.splitlines()
    assert out == ["[rank 0] a0", "[rank 1] b0", "[rank 0] a1", "[rank 1] b1"]
    assert cli("logs", "eva-test", "--rank", "1").output.splitlines() == ["[rank 1] b0", "[rank 1] b1"]
    reqs = cluster.requests("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/eva-test-0/log")
    assert reqs[-1].params.get("timestamps") == "true"


def test_logs_follow_streams_until_the_streams_end(launched, cluster, cli):
    for i in (0, 1):
        cluster.put("v1/pods", NAMESPACE, f"eva-test-{i}", _pod(f"eva-test-{i}", i))
        chunks = tuple(f"2026-11-27T10:00:0{k}Z r{i} line {k}\n".encode() for k in range(3))
        cluster.do(
            lambda i=i, chunks=chunks: (
                cluster.handler[f"/api/v1/namespaces/{NAMESPACE}/pods/eva-test-{i}/log"]
                << kmock.headers({"Content-Type": "text/plain"})
                << chunks
            )
        )
    r = cli("logs", "eva-test", "-f", "--tail", "10")
    lines = r.output.splitlines()
    assert sorted(lines) == sorted(f"[rank {i}] r{i} line {k}" for i in (0, 1) for k in range(3))
    assert [x for x in lines if x.startswith("[rank 0]")] == [f"[rank 0] r0 line {k}" for k in range(3)]
    reqs = cluster.requests("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/eva-test-1/log")
    assert reqs[0].params.get("follow") == "true" and reqs[0].params.get("tailLines") == "10"
    # The pod still runs when its stream ends: reopened once from the last timestamp, no new lines.
    assert len(reqs) == 2 and reqs[1].params.get("sinceTime") == "2026-11-27T10:00:02Z"


def test_logs_follow_waits_for_a_pending_pod(launched, cluster, cli, monkeypatch):
    monkeypatch.setattr("launcher.backends.kube_logs.FOLLOW_START_POLL_S", 0.05)
    cluster.put("v1/pods", NAMESPACE, "eva-test-0", _pod("eva-test-0", 0, phase="Pending"))
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/eva-test-0/log"
    waiting = {
        "kind": "Status",
        "message": 'container "trainer" in pod "eva-test-0" is waiting to start: ContainerCreating',
    }
    cluster.do(lambda: cluster.handler[path][:2] << 400 << waiting)
    cluster.do(
        lambda: (
            cluster.handler[path]
            << kmock.headers({"Content-Type": "text/plain"})
            << (b"2026-11-27T10:00:00Z up\n",)
        )
    )
    r = cli("logs", "eva-test", "-f")
    assert r.output.splitlines() == ["[rank 0] (waiting for eva-test-0 to start)", "[rank 0] up"]
    assert len(cluster.requests("GET", path)) == 3


def test_stop_deletes_with_propagation(launched, cluster, cli):
    r = cli("stop", "eva-test")
    assert r.exit_code == 0, r.output
    assert cluster.objects("batch/v1/jobs") == {} and cluster.objects("v1/services") == {}
    assert all(d.params.get("propagationPolicy") == "Foreground" for d in cluster.requests("DELETE", "/api"))
    assert JobStore().get("eva-test").last_phase == "Stopped"


def test_injected_500s_then_success(launched, cluster, cli, monkeypatch):
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/eva-test"
    cluster.do(
        lambda: cluster.handler["get", path][:2] << 500 << {"kind": "Status", "message": "etcd timeout"}
    )
    cluster.put("v1/pods", NAMESPACE, "eva-test-0", _pod("eva-test-0", 0))
    r = cli("status", "eva-test", "-o", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["phase"] == "Running"
    assert len(cluster.requests("GET", path)) >= 3


def test_dropped_connections_then_success(launched, cluster, cli):
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/eva-test"

    def drop(request):  # the server closes the TCP connection without answering
        request._raw_request.transport.close()
        return b""

    cluster.do(lambda: cluster.handler["get", path][:2] << drop)
    r = cli("status", "eva-test", "-o", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["job"] == "eva-test"
    assert len(cluster.requests("GET", path)) >= 3


def test_500_on_create_is_retried_and_not_duplicated(
    cli, cluster, kubeconfig, state_dir, tmp_path, monkeypatch, make_bundle
):
    cluster.add_gpu_node("gpu-0", 8)
    cluster.add_gpu_node("gpu-1", 8)
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    # kmock stores the object and then answers 500: a create that landed although the reply was lost.
    cluster.do(lambda: cluster.handler["post", path, lambda req: not req.params.get("dryRun")][:1] << 503)
    r = cli("launch", str(make_bundle(tmp_path / "b")), "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 0, r.output
    # Count by the job label, not by name: a retry that created a second Job (another name, or a
    # generated one) carries the same label and would show here as two.
    jobs = [
        key
        for key, obj in cluster.objects("batch/v1/jobs").items()
        if (obj.get("metadata", {}).get("labels") or {}).get("evaplan.io/job") == "eva-test"
    ]
    assert jobs == [(NAMESPACE, "eva-test")]
    # And the lost reply was not answered by posting the same Job again on top of the stored one.
    creates = [q for q in cluster.requests("POST", path) if not q.params.get("dryRun")]
    assert len(creates) <= 2, f"{len(creates)} creates of one Job"


def test_403_gives_an_rbac_hint(cli, cluster, kubeconfig, state_dir, tmp_path, make_bundle):
    cluster.add_gpu_node("gpu-0", 8)
    cluster.add_gpu_node("gpu-1", 8)
    cluster.do(
        lambda: (
            cluster.handler["post", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"]
            << 403
            << {"kind": "Status", "message": 'jobs.batch is forbidden: User "tester" cannot create resource'}
        )
    )
    r = cli("launch", str(make_bundle(tmp_path / "b")), "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 2
    assert "forbidden (403)" in r.output and "RBAC verb 'create' on 'jobs.batch'" in r.output
    assert f"kubectl auth can-i create jobs.batch -n {NAMESPACE}" in r.output
    # kmock stores even a refused create; what matters: the objects created before it were rolled back.
    assert cluster.objects("v1/services") == {} and cluster.objects("v1/configmaps") == {}


def test_crd_kind_without_operator(cli, cluster, kubeconfig, state_dir, tmp_path, make_bundle):
    cluster.add_gpu_node("gpu-0", 8)
    cluster.add_gpu_node("gpu-1", 8)
    bundle = make_bundle(tmp_path / "b", flavor="pytorchjob")
    r = cli("launch", str(bundle), "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 2
    assert "does not serve PyTorchJob (kubeflow.org/v1)" in r.output and "training-operator" in r.output
    assert "indexed-job" in r.output
    assert not cluster.requests("POST", "/api")

    # With the operator installed (its CRD served), the same bundle launches.
    cluster.do(
        lambda: cluster.handler.resources.__setitem__(
            "kubeflow.org/v1/pytorchjobs", kmock.ResourceInfo(kind="PyTorchJob", namespaced=True)
        )
    )
    r = cli("launch", str(bundle), "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 0, r.output
    assert set(cluster.objects("kubeflow.org/v1/pytorchjobs")) == {(NAMESPACE, "eva-test")}


def test_crd_404_at_create_names_the_operator(cli, cluster, kubeconfig, state_dir, tmp_path, make_bundle):
    cluster.add_gpu_node("gpu-0", 8)
    cluster.add_gpu_node("gpu-1", 8)
    cluster.do(
        lambda: cluster.handler.resources.__setitem__(
            "jobset.x-k8s.io/v1alpha2/jobsets", kmock.ResourceInfo(kind="JobSet", namespaced=True)
        )
    )
    cluster.do(
        lambda: (
            cluster.handler["post", f"/apis/jobset.x-k8s.io/v1alpha2/namespaces/{NAMESPACE}/jobsets"]
            << 404
            << {"kind": "Status", "message": "the server could not find the requested resource"}
        )
    )
    r = cli("launch", str(make_bundle(tmp_path / "b", flavor="jobset")), "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 2
    assert "JobSet controller is not installed" in r.output and "indexed-job" in r.output


def test_watch_resumes_after_disconnect(launched, cluster, kubeconfig):
    rec = JobStore().get("eva-test")
    be = KubernetesBackend.for_record(rec, backoff=FAST)
    pod = _pod("eva-test-0", 0)
    cluster.put("v1/pods", NAMESPACE, "eva-test-0", pod)
    # The first watch connection replays the known pod and then drops; the second one sees a change.
    changed = {**pod, "metadata": {**pod["metadata"], "resourceVersion": "2"}, "status": {"phase": "Failed"}}
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}
    cluster.do(lambda: cluster.handler["watch"][:1] << ({"type": "ADDED", "object": pod},))  # then drops
    cluster.do(lambda: cluster.handler["watch"][1:2] << (gone,))  # the version was compacted: relist
    cluster.do(lambda: cluster.handler["watch"][2:3] << ({"type": "MODIFIED", "object": changed}, ...))
    # returns at the change; the bound only stops a broken watch from hanging (generous for load 8)
    assert be.wait_for_change(rec, timeout_s=300) is True
    watches = cluster.requests("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
    watched = [w for w in watches if w.params.get("watch") == "true"]
    assert len(watched) >= 3
    assert watched[1].params.get("resourceVersion") == "1"  # resumed where the dropped stream was
    assert "resourceVersion" not in watched[2].params  # after 410 Gone: from scratch


def test_budget_guard_stops_the_job(launched, cluster, cli, kubeconfig):
    from launcher.state import JobStore as Store

    store = Store()
    rec = store.get("eva-test")
    store.put(rec.with_(max_cost_usd=0.5))
    pod = _pod("eva-test-0", 0)
    pod["status"]["startTime"] = datetime.now(timezone.utc).isoformat()  # spent so far: ~$0
    cluster.put("v1/pods", NAMESPACE, "eva-test-0", pod)
    # 1600 of 3200 samples at 0.1 samples/s: 4.4 h left × 2 nodes × $55.04 ≫ $0.50
    lines = "".join(
        json.dumps({"event": "step", "step": s, "samples_seen": 32 * s, "samples_per_s": 0.1}) + "\n"
        for s in (48, 49, 50)
    )  # three records: enough for the guard to trust the projection
    cluster.do(
        lambda: (
            cluster.handler[f"/api/v1/namespaces/{NAMESPACE}/pods/eva-test-0/log"]
            << kmock.headers({"Content-Type": "text/plain"})
            << lines.encode()
        )
    )
    r = cli("watch", "eva-test", "--interval", "0.1")
    assert r.exit_code == 0, r.output
    assert "budget guard: projected spend" in r.output and "passes the budget $0.50" in r.output
    assert cluster.objects("batch/v1/jobs") == {}
    assert r.output.rstrip().endswith("eva-test: Stopped")
    assert JobStore().get("eva-test").last_phase == "Stopped"


def test_launch_renders_from_flags_into_the_context_namespace(cli, cluster, kubeconfig, state_dir):
    cluster.add_gpu_node("gpu-0", 8)
    r = cli(
        "launch",
        "--model",
        "eva-clip-debug",
        "--hardware",
        "h100-sxm",
        "--nodes",
        "1",
        "--offering",
        "aws-p5",
        "--image",
        "ghcr.io/acme/evaclip:1.0",
        "--job-name",
        "eva-flags",
        "--kubeconfig",
        str(kubeconfig),
    )
    assert r.exit_code == 0, r.output
    assert (state_dir / "bundles" / "eva-flags" / "bundle.json").is_file()
    assert set(cluster.objects("batch/v1/jobs")) == {(NAMESPACE, "eva-flags")}
    no_image = cli(
        "launch",
        "--model",
        "eva-clip-debug",
        "--hardware",
        "h100-sxm",
        "--nodes",
        "1",
        "--job-name",
        "eva-x",
        "--kubeconfig",
        str(kubeconfig),
    )
    assert no_image.exit_code == 2 and "--image" in no_image.output
    both = cli(
        "launch",
        str(state_dir / "bundles" / "eva-flags"),
        "--model",
        "eva-clip-debug",
        "--kubeconfig",
        str(kubeconfig),
    )
    assert both.exit_code == 2 and "--model" in both.output


def test_budget_guard_waits_for_a_projection_it_can_trust():
    from launcher.monitor import CostBasis, Progress

    basis = CostBasis(nodes=2, usd_per_node_hour=55.04, total_steps=100, global_batch=32, estimate_usd=10.0)
    p = Progress(
        phase="Running",
        basis=basis,
        step=1,
        samples_seen=32,
        samples_per_s=0.1,
        eta_s=31680.0,
        elapsed_s=10.0,
        spent_usd=0.3,
        projected_usd=969.0,
        budget_usd=1.0,
        window=1,
    )
    assert p.over_budget is None  # one warm-up step is not a projection
    assert "projected spend $969.00" in (Progress(**{**p.__dict__, "window": 3}).over_budget or "")
    assert "reached the budget" in (Progress(**{**p.__dict__, "spent_usd": 1.5}).over_budget or "")


def test_namespace_from_context_and_flag(cluster, kubeconfig, state_dir):
    assert KubernetesBackend(KubeApi(kubeconfig=str(kubeconfig))).namespace == NAMESPACE
    assert KubernetesBackend(KubeApi(kubeconfig=str(kubeconfig), namespace="other")).namespace == "other"


def test_unknown_job_is_a_clear_error(cli, state_dir):
    r = cli("status", "nope")
    assert r.exit_code == 2 and "no job named 'nope'" in r.output


def test_bundle_missing(cli, state_dir, tmp_path: Path):
    r = cli("launch", str(tmp_path / "nothing"))
    assert r.exit_code == 2 and "does not exist" in r.output


def test_unreachable_api_server_is_retried_then_one_line(cli, state_dir, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "dead.yaml"
    cfg.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dead",
                "clusters": [{"name": "dead", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
            }
        )
    )
    r = cli(
        "launch",
        "--model",
        "eva-clip-debug",
        "--hardware",
        "h100-sxm",
        "--nodes",
        "1",
        "--image",
        "ghcr.io/acme/evaclip:1.0",
        "--kubeconfig",
        str(cfg),
    )
    assert r.exit_code == 1
    assert f"connection failed after {FAST.attempts} attempts" in r.output and "Traceback" not in r.output


def test_status_watch_ends_with_the_job(launched, cluster, cli):
    job = cluster.objects("batch/v1/jobs")[(NAMESPACE, "eva-test")]
    done = {
        **job,
        "status": {
            "conditions": [{"type": "Complete", "status": "True"}],
            "startTime": "2026-11-27T10:00:00Z",
            "completionTime": "2026-11-27T11:00:00Z",
        },
    }
    cluster.put("batch/v1/jobs", NAMESPACE, "eva-test", done)
    for i in (0, 1):  # each pod waited 30 min for its node, then ran 10:00 → 11:00
        ran = {
            "terminated": {
                "exitCode": 0,
                "startedAt": "2026-11-27T10:00:00Z",
                "finishedAt": "2026-11-27T11:00:00Z",
            }
        }
        pod = _pod(f"eva-test-{i}", i, phase="Succeeded", status={"startTime": "2026-11-27T09:30:00Z"})
        pod["status"]["containerStatuses"] = [{"name": "trainer", "state": ran}]
        cluster.put("v1/pods", NAMESPACE, f"eva-test-{i}", pod)
    store = JobStore()  # the job was created before its pods' (fixed) times: spend counts from then
    store.put(store.get("eva-test").with_(created_at=datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)))
    r = cli("status", "eva-test", "--watch", "--interval", "0.1")
    assert r.exit_code == 0, r.output
    assert "eva-test (kubernetes namespace ml): Succeeded" in r.output
    # one hour of run time on each of 2 nodes at $55.04/node-hour; the wait for nodes is free
    assert "spent $110.08 in 1h00m" in r.output
    assert JobStore().get("eva-test").last_phase == "Succeeded"


@pytest.mark.parametrize(
    ("labels", "per_job", "rank"),
    [
        ({"training.kubeflow.org/replica-type": "master", "training.kubeflow.org/replica-index": "0"}, 1, 0),
        ({"training.kubeflow.org/replica-type": "Worker", "training.kubeflow.org/replica-index": "2"}, 1, 3),
        ({"batch.kubernetes.io/job-completion-index": "5"}, 1, 5),
        ({"jobset.sigs.k8s.io/job-index": "1", "batch.kubernetes.io/job-completion-index": "2"}, 4, 6),
    ],
)
def test_pod_rank_in_every_flavour(labels, per_job, rank):
    from launcher.backends.kubernetes import pod_rank

    assert pod_rank({"metadata": {"labels": labels}}, per_job) == rank


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"apiVersion: v1\nclusters: [\n  - {name: x\n", "line 3"),  # a YAML syntax error
        (b"\xff\xfe\x00binary", "not UTF-8"),
        (b"just a string\n", "not a kubeconfig"),
        (b"- a\n- list\n", "not a kubeconfig"),
    ],
    ids=["yaml-syntax", "binary", "scalar", "list"],
)
def test_a_malformed_kubeconfig_is_one_line(cli, state_dir, tmp_path, make_bundle, content, says):
    """A kubeconfig the client cannot parse is the user's file: one line naming it, exit 2, nothing
    recorded (was "internal error: ParserError")."""
    bad = tmp_path / "kubeconfig.yaml"
    bad.write_bytes(content)
    r = cli("launch", str(make_bundle(tmp_path / "b")), "--kubeconfig", str(bad))
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and str(bad) in lines[0] and says in lines[0], r.output
    assert "internal error" not in r.output
    assert "no jobs" in cli("list").output
