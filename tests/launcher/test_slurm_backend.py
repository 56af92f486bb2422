"""The slurm backend against a real Slurm: one one-node cluster on 127.0.0.1 for the whole file
(tests/launcher/slurm_cluster.py, the `slurm` fixture), the bundled trainer (eva-clip-debug, 2 CPU
ranks, gloo) submitted with sbatch. Skipped, with the reason, where Slurm's packages or root are missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from launcher.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

# The trainer's start-up (torchrun, two ranks importing torch and DeepSpeed) takes ~15 s idle; this
# bounds a wait without progress at load 8, not a speed.
TRAINER_WAIT_S = 600.0
# slurmctld checks time limits and their --signal every 30 s (PERIODIC_TIMEOUT in slurmctld): a wait
# for that signal may see no progress for that long, plus the trainer's exit.
SIGNAL_WAIT_S = 300.0


def _bundle(tmp_path: Path, job: str, profile_dirs: list[str], factory, **kw) -> Path:
    return factory(
        tmp_path / f"bundle-{job}",
        job_name=job,
        flavor="slurm",
        nodes=1,
        hardware="cpu-2",
        offering="cpu-test",
        total_steps=100_000,
        profile_dirs=profile_dirs,
        work_dir=str(tmp_path / "shared"),
        python=sys.executable,  # the nodes' interpreter: this venv's, with evaclip on PYTHONPATH (sbatch exports the environment)
        cpu_per_node=2,  # the test node's CPUs (the sizing would ask for a loader core per rank too)
        **kw,
    )


def _metrics(rec) -> Path:
    return Path(rec.backend_data["metrics_path"])


def _steps(path: Path) -> int:
    if not path.is_file():
        return 0
    return sum('"event": "step"' in line for line in path.read_text().splitlines())


def _status(cli, job: str) -> dict:
    r = cli("status", job, "-o", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_train_stop_resume_time_limit(slurm, cli, tmp_path, cpu_hardware, bundle_factory, wait):
    bundle = _bundle(tmp_path, "eva-slurm", cpu_hardware, bundle_factory)
    dry = cli("launch", str(bundle), "--backend", "slurm", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "to start at" in dry.output and f"nodes {slurm.node}" in dry.output  # sbatch --test-only's verdict
    assert JobStore().all() == []

    r = cli("launch", str(bundle), "--backend", "slurm")
    assert r.exit_code == 0, r.output
    rec = JobStore().get("eva-slurm")
    assert slurm.scontrol("show", "job", rec.backend_data["job_id"]).count(
        f"Comment=evaplan-owner:{rec.backend_data['owner']}"
    )
    wait(lambda: _steps(_metrics(rec)) >= 3, what="three trainer steps", stall_s=TRAINER_WAIT_S)
    doc = _status(cli, "eva-slurm")
    assert doc["phase"] == "Running"
    assert [(x["rank"], x["node"]) for x in doc["ranks"]] == [(0, slurm.node), (1, slurm.node)]
    assert doc["progress"]["step"] >= 3
    assert "[rank 0] step" in cli("logs", "eva-slurm").output

    r = cli("stop", "eva-slurm")
    assert r.exit_code == 0, r.output
    # DeepSpeed's `latest` names the newest checkpoint's tag: step<8 digits> (evaclip/checkpoint.py).
    latest = (tmp_path / "shared" / "eva-slurm" / "checkpoints" / "latest").read_text().strip()
    stopped_at = int(latest.removeprefix("step"))
    assert stopped_at >= 3
    doc = _status(cli, "eva-slurm")
    assert doc["phase"] == "Stopped" and "evaplan stop" in doc["message"], doc

    again = cli("launch", str(bundle), "--backend", "slurm")
    assert again.exit_code == 2 and "--resume" in again.output

    r = cli("launch", str(bundle), "--backend", "slurm", "--resume")
    assert r.exit_code == 0, r.output
    resumed = JobStore().get("eva-slurm")
    assert resumed.backend_data["job_id"] != rec.backend_data["job_id"]
    wait(
        lambda: f"at step {stopped_at}" in cli("logs", "eva-slurm").output,
        what="the trainer resuming from its checkpoint",
        stall_s=TRAINER_WAIT_S,
    )
    # A step of the resumed run, so its SIGTERM handler is in place: a signal while it still starts
    # up ends it like any process, with no checkpoint (and the test would read the first run's end).
    before = _steps(_metrics(rec))
    wait(lambda: _steps(_metrics(rec)) > before, what="a step of the resumed run", stall_s=TRAINER_WAIT_S)

    # Slurm's --signal=TERM@<lead> before the time limit: the resumed trainer checkpoints and exits,
    # and status says it was the time limit. The limit is lowered on the running job to one whose
    # signal time has passed (end = start + minutes ≤ now + lead), so the signal comes at slurmctld's
    # next time-limit check.
    lead = int(
        next(x for x in (bundle / "job.sbatch").read_text().splitlines() if "--signal=" in x).split("@")[1]
    )
    job_id = resumed.backend_data["job_id"]
    assert "error" not in slurm.scontrol("update", f"jobid={job_id}", f"TimeLimit={max(1, lead // 60)}")
    wait(
        lambda: _status(cli, "eva-slurm")["phase"] == "Stopped",
        what="the time limit's signal",
        progress=lambda: _steps(_metrics(rec)),
        stall_s=SIGNAL_WAIT_S,
    )
    doc = _status(cli, "eva-slurm")
    assert "TimeLimit" in doc["message"] and "checkpointed step" in doc["message"], doc
    latest = (tmp_path / "shared" / "eva-slurm" / "checkpoints" / "latest").read_text().strip()
    assert int(latest.removeprefix("step")) > stopped_at
    # Following the log of a job that has ended prints its last lines and returns; both runs' files
    # are read (slurm-<first job>.out, slurm-<resumed job>.out).
    followed = cli("logs", "eva-slurm", "-f")
    assert followed.exit_code == 0 and f"at step {stopped_at}" in followed.output
    assert followed.output.index("[rank 0] step") < followed.output.index(f"at step {stopped_at}")
    listing = json.loads(cli("list", "--format", "json").output)
    assert [(j["job"], j["phase"]) for j in listing] == [("eva-slurm", "Stopped")]


def test_node_down_reason_and_budget_time(slurm, cli, tmp_path, cpu_hardware, bundle_factory, wait):
    """The budget (--max-cost ÷ $3.60/node-hour) becomes the job's --time; the node marked down
    under the running job: Slurm requeues it (--requeue) and status shows why it waits, with the
    node's reason."""
    bundle = _bundle(tmp_path, "eva-slurm-down", cpu_hardware, bundle_factory)
    r = cli("launch", str(bundle), "--backend", "slurm", "--max-cost", "0.30", "--force")
    assert r.exit_code == 0, r.output
    rec = JobStore().get("eva-slurm-down")
    # $0.30 at $3.60/node-hour buys 300 s of one node: --time 5 minutes.
    assert "TimeLimit=00:05:00" in slurm.scontrol("show", "job", rec.backend_data["job_id"])
    wait(lambda: _status(cli, "eva-slurm-down")["phase"] == "Running", what="the job to start", stall_s=60.0)
    out = slurm.scontrol("update", f"nodename={slurm.node}", "state=down", "reason=evaplan-test bad DIMM")
    assert "error" not in out.lower(), out
    doc = wait(
        lambda: (d := _status(cli, "eva-slurm-down"))["phase"] != "Running" and d,
        what="the job to leave the down node",
        stall_s=120.0,
    )
    assert doc["phase"] == "Pending", doc
    assert f"node {slurm.node} is DOWN" in doc["message"] and "evaplan-test bad DIMM" in doc["message"], doc
    again = cli("launch", str(bundle), "--backend", "slurm", "--replace", "--dry-run")
    assert again.exit_code == 2 and "evaplan-test bad DIMM" in again.output, again.output
    r = cli("stop", "eva-slurm-down")
    assert r.exit_code == 0, r.output
    assert _status(cli, "eva-slurm-down")["phase"] == "Stopped"


def test_unknown_partition_is_one_line(slurm, cli, tmp_path, cpu_hardware, bundle_factory):
    bundle = _bundle(tmp_path, "eva-slurm-part", cpu_hardware, bundle_factory, partition="no-such-part")
    r = cli("launch", str(bundle), "--backend", "slurm")
    assert r.exit_code == 2 and "Invalid partition" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert JobStore().all() == []


def test_controller_down_is_one_line(slurm, cli, tmp_path, cpu_hardware, bundle_factory, monkeypatch):
    conf = tmp_path / "slurm.conf"
    text = slurm.conf.read_text()
    dead = text.replace(f"SlurmctldPort={slurm.ctld_port}", "SlurmctldPort=1")  # nothing listens there
    conf.write_text(dead.replace("SlurmctldTimeout=30", "SlurmctldTimeout=30\nMessageTimeout=2"))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    bundle = _bundle(tmp_path, "eva-slurm-nc", cpu_hardware, bundle_factory)
    r = cli("launch", str(bundle), "--backend", "slurm")
    assert r.exit_code == 2 and "controller does not answer" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_sbatch_missing_is_one_line(cli, tmp_path, state_dir, cpu_hardware, bundle_factory, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    bundle = _bundle(tmp_path, "eva-slurm-nb", cpu_hardware, bundle_factory)
    r = cli("launch", str(bundle), "--backend", "slurm")
    assert r.exit_code == 2 and "sbatch is not on PATH" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_bundles_go_to_their_own_scheduler(cli, tmp_path, state_dir, cpu_hardware, bundle_factory):
    slurm_bundle = _bundle(tmp_path, "eva-slurm-k8s", cpu_hardware, bundle_factory)
    r = cli("launch", str(slurm_bundle), "--backend", "local")
    assert r.exit_code == 2 and "--backend slurm" in r.output, r.output
    k8s_bundle = bundle_factory(tmp_path / "k8s", job_name="eva-k8s", nodes=1)
    r = cli("launch", str(k8s_bundle), "--backend", "slurm", "--dry-run")
    assert r.exit_code == 2 and "not slurm" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_launch_renders_with_the_config_files_slurm_settings(slurm, cli, tmp_path, monkeypatch):
    (tmp_path / "evaplan.toml").write_text(
        f'work_dir = "{tmp_path / "shared"}"\npartition = "{slurm.partition}"\n'
    )
    monkeypatch.chdir(tmp_path)
    r = cli(
        "launch",
        "--backend",
        "slurm",
        "--model",
        "eva-clip-debug",
        "--hardware",
        "cpu",
        "--gpus",
        "2",
        "--cpu-per-node",
        "2",
        "--dry-run",
    )
    assert r.exit_code == 0, r.output
    assert f"in partition {slurm.partition}" in r.output
    assert f"ranks in {tmp_path / 'shared' / 'eva-clip-debug'}" in r.output


def test_a_launch_cut_short_after_sbatch_leaves_nothing_queued(
    slurm, cli, tmp_path, cpu_hardware, bundle_factory, monkeypatch, wait
):
    """A signal between sbatch's answer and the job store's record: the launch cancels what it queued
    (found by the job's name and this store's owner comment) and forgets the job. A launch killed
    there (no unwinding at all) leaves its intent, and `stop` cancels the job the same way."""
    from launcher import service
    from launcher.backends.slurm import SlurmBackend

    real = SlurmBackend.launch
    queued: list[str] = []

    def cut_short(self, bundle, opts):
        data = real(self, bundle, opts)
        if not opts.dry_run:
            queued.append(data["job_id"])
            raise KeyboardInterrupt  # ^C right after sbatch answered
        return data

    monkeypatch.setattr(SlurmBackend, "launch", cut_short)
    bundle = _bundle(tmp_path, "eva-slurm-cut", cpu_hardware, bundle_factory)
    r = cli("launch", str(bundle), "--backend", "slurm")
    assert r.exit_code != 0 and len(queued) == 1, r.output
    wait(lambda: _cancelled(slurm, queued[0]), what="the queued job cancelled", stall_s=60.0)
    assert JobStore().find("eva-slurm-cut") is None

    # kill -9 at the same point: nothing unwinds, the intent (no job id) stays in the store.
    monkeypatch.setattr(service.JobService, "_undo", lambda *a, **kw: None)
    bundle = _bundle(tmp_path, "eva-slurm-killed", cpu_hardware, bundle_factory)
    r = cli("launch", str(bundle), "--backend", "slurm")
    assert r.exit_code != 0 and len(queued) == 2, r.output
    assert "job_id" not in JobStore().get("eva-slurm-killed").backend_data
    assert "JobState=CANCELLED" not in slurm.scontrol("show", "job", queued[1])
    r = cli("stop", "eva-slurm-killed")
    assert r.exit_code == 0, r.output
    wait(lambda: _cancelled(slurm, queued[1]), what="the killed launch's job cancelled", stall_s=60.0)


def _cancelled(slurm, job_id: str) -> bool:
    # A running job passes through COMPLETING after scancel before scontrol shows CANCELLED.
    return "JobState=CANCELLED" in slurm.scontrol("show", "job", job_id)
