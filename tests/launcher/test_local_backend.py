"""The local backend: torchrun on this machine, detached; status from metrics, merged logs,
stop with SIGTERM (checkpoint) and --resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from launcher.backends.local import _parse_log_line, _tail_lines, kill_job, world_size_of
from launcher.state import JobStore

pytest.importorskip("torch")
STANDIN = Path(__file__).with_name("standin_trainer.py")


@pytest.fixture(autouse=True)
def _no_leftover_processes(state_dir):
    """Whatever a failing test leaves running is killed: every process labelled with a launch id
    this test's job store knows (ranks included, whoever their parent is now)."""
    yield
    try:
        records = JobStore().all()
    except Exception:
        records = []
    for rec in records:
        launch_id = rec.backend_data.get("launch_id")
        if launch_id:
            kill_job(launch_id)


# The stand-in trainer does no real work: a whole-wait bound generous for load 8, where starting
# torchrun and two Python ranks takes 5-10× its idle ~5 s.
STANDIN_WAIT_S = 600.0


def test_world_size_from_ds_config():
    assert (
        world_size_of(
            {"train_batch_size": 32, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 8}
        )
        == 2
    )


def test_log_line_prefix_parsing_and_tail(tmp_path):
    assert _parse_log_line("[rank1]:hello [x]\n").rank == 1
    assert _parse_log_line("[rank1]:hello [x]\n").text == "hello [x]"
    assert _parse_log_line("W1127 torchrun warning").rank is None
    p = tmp_path / "m.jsonl"
    p.write_text("".join(f'{{"step": {i}}}\n' for i in range(5000)))
    assert _tail_lines(p, 3, block_bytes=64) == ['{"step": 4997}', '{"step": 4998}', '{"step": 4999}']


@pytest.mark.slow
def test_local_launch_status_logs_stop_resume(cli, state_dir, cpu_bundle, monkeypatch, wait):
    monkeypatch.setattr("launcher.backends.local.TRAINER_ENTRYPOINT", (str(STANDIN),))
    bundle = cpu_bundle("eva-local", 10_000)
    batch = json.loads((bundle / "ds_config.json").read_text())["train_batch_size"]
    r = cli("launch", str(bundle), "--backend", "local")
    assert r.exit_code == 0, r.output
    rec = JobStore().get("eva-local")
    metrics = Path(rec.backend_data["metrics_path"])
    wait(
        lambda: metrics.is_file() and metrics.read_text().count("\n") >= 3,
        what="metrics",
        stall_s=STANDIN_WAIT_S,
    )

    doc = json.loads(cli("status", "eva-local", "-o", "json").output)
    assert doc["phase"] == "Running" and len(doc["ranks"]) == 2
    p = doc["progress"]
    assert p["step"] >= 3 and p["samples_per_s"] == pytest.approx(batch / 0.2)
    assert p["total_samples"] == 10_000 * batch
    assert p["eta_s"] == pytest.approx((10_000 * batch - p["samples_seen"]) / (batch / 0.2))
    assert p["spent_usd"] == pytest.approx(p["elapsed_s"] / 3600 * 3.6, rel=1e-6)

    def both_ranks():
        out = cli("logs", "eva-local").output
        return "[rank 0] rank 0 step" in out and "[rank 1] rank 1 step" in out

    wait(both_ranks, what="both ranks in the log", stall_s=STANDIN_WAIT_S)
    only1 = cli("logs", "eva-local", "--rank", "1", "--tail", "2").output.splitlines()
    assert len(only1) == 2 and all(x.startswith("[rank 1] ") for x in only1)

    r = cli("stop", "eva-local")
    assert r.exit_code == 0, r.output
    ckpt = Path(rec.backend_data["work_dir"]) / "checkpoints" / "latest.json"
    stopped_at = json.loads(ckpt.read_text())["step"]
    assert stopped_at >= 3
    assert json.loads(cli("status", "eva-local", "-o", "json").output)["phase"] == "Stopped"
    assert "checkpointed step" in cli("logs", "eva-local").output

    again = cli("launch", str(bundle), "--backend", "local")
    assert again.exit_code == 2 and "--resume" in again.output

    r = cli("launch", str(bundle), "--backend", "local", "--resume")
    assert r.exit_code == 0, r.output
    wait(
        lambda: f"starting at step {stopped_at}" in cli("logs", "eva-local").output,
        what="resume",
        stall_s=STANDIN_WAIT_S,
    )
    stopped = cli("stop", "eva-local")
    assert stopped.exit_code == 0, stopped.output
    listing = json.loads(cli("list", "--format", "json").output)
    assert [(j["job"], j["phase"]) for j in listing] == [("eva-local", "Stopped")]
    assert listing[0]["spent"] > 0  # both runs' node time at $3.60/node-hour

    # The budget guard: 10,000 steps at 0.2 s on 1 node × $3.60/node-hour project to ~$2 > $0.50.
    r = cli("launch", str(bundle), "--backend", "local", "--replace", "--max-cost", "0.5", "--force")
    assert r.exit_code == 0, r.output
    r = cli("watch", "eva-local", "--interval", "0.5")
    assert r.exit_code == 0, r.output
    assert "budget guard: projected spend" in r.output and "passes the budget $0.50" in r.output
    assert r.output.rstrip().endswith("eva-local: Stopped")
    assert (Path(rec.backend_data["work_dir"]) / "checkpoints" / "latest.json").is_file()


@pytest.mark.slow
@pytest.mark.train
def test_local_end_to_end_with_the_real_trainer(cli, state_dir, cpu_hardware, wait):
    """eva-clip-debug on 2 CPU ranks (gloo) trains for real; status reads its metrics; logs show
    both ranks; stop leaves a SIGTERM checkpoint; --resume continues from it."""
    pytest.importorskip("deepspeed")
    pytest.importorskip("evaclip.train")
    # launch renders from the planner's flags (2 CPU ranks: the cpu-2 test profile), then runs torchrun
    flags = [
        "--profiles-dir",
        cpu_hardware[0],
        "launch",
        "--backend",
        "local",
        "--model",
        "eva-clip-debug",
        "--hardware",
        "cpu-2",
        "--nodes",
        "1",
        "--offering",
        "cpu-test",
        "--samples",
        "200000",
        "--job-name",
        "eva-e2e",
    ]
    launched_at = time.monotonic()
    r = cli(*flags)
    assert r.exit_code == 0, r.output
    rec = JobStore().get("eva-e2e")
    work = Path(rec.backend_data["work_dir"])

    def steps_done() -> int:
        doc = json.loads(cli("status", "eva-e2e", "-o", "json").output)
        assert doc["phase"] == "Running", doc
        return doc["progress"]["step"] or 0

    # No fixed limit: the job may take what it needs while it moves. Before the first step, the log
    # grows (torchrun, imports) except while DeepSpeed JIT-builds its CPU op (silent, ~90 s idle when
    # `make dev` has not done it, several times that loaded): a 20-minute window covers it. After,
    # the window is 40 step intervals as measured here (at least 3 minutes).
    log = work / "job.log"
    seen: dict[int, float] = {}

    def step_now() -> int:
        """The job's step, remembering when each was first seen (by the waits' predicates too: the
        status may move from step 0 past 3 between two polls, and the start-up time below needs the
        first step seen)."""
        step = steps_done()
        seen.setdefault(step, time.monotonic())
        return step

    def progress() -> tuple[int, int]:
        return (log.stat().st_size if log.exists() else 0, step_now())

    def step_interval_s() -> float | None:
        steps = sorted(k for k in seen if k >= 1)
        if len(steps) < 2:
            return None
        return (seen[steps[-1]] - seen[steps[0]]) / (steps[-1] - steps[0])

    def window() -> float:
        interval = step_interval_s()
        return 1200.0 if interval is None else max(180.0, 40 * interval)

    wait(lambda: step_now() >= 3, what="3 trained steps", progress=progress, stall_s=window)
    doc = json.loads(cli("status", "eva-e2e", "-o", "json").output)
    assert doc["progress"]["samples_per_s"] > 0 and doc["progress"]["eta_s"] > 0
    logs = cli("logs", "eva-e2e").output
    assert "[rank 0] step " in logs and "[rank 1] " in logs

    stopped = cli("stop", "eva-e2e")

    assert stopped.exit_code == 0, stopped.output
    tags = sorted(p.name for p in (work / "output" / "checkpoints").glob("step*"))
    assert tags, "no checkpoint after SIGTERM"
    assert "(sigterm)" in cli("logs", "eva-e2e", "--rank", "0").output
    stopped_step = int(tags[-1].removeprefix("step"))

    # The resumed run starts like the first (the op is built by now): the first run's start-up, from
    # launch to its first step, measured above, scaled for a machine whose load may have risen.
    r = cli(*flags, "--resume")
    assert r.exit_code == 0, r.output
    startup_s = min(seen[k] for k in seen if k >= 1) - launched_at
    wait(
        lambda: f"resumed from {tags[-1]} at step {stopped_step}" in cli("logs", "eva-e2e").output,
        what="the resumed run",
        progress=lambda: log.stat().st_size if log.exists() else 0,
        stall_s=max(300.0, 5 * startup_s),
    )
    seen.clear()
    wait(lambda: step_now() > stopped_step, what="a step after the resume", progress=progress, stall_s=window)
    stopped = cli("stop", "eva-e2e")
    assert stopped.exit_code == 0, stopped.output


@pytest.mark.slow
def test_local_logs_follow_until_the_job_ends(cli, state_dir, cpu_bundle, monkeypatch):
    monkeypatch.setattr("launcher.backends.local.TRAINER_ENTRYPOINT", (str(STANDIN),))
    bundle = cpu_bundle("eva-short", 5)
    assert cli("launch", str(bundle), "--backend", "local").exit_code == 0
    r = cli("logs", "eva-short", "-f")  # returns once torchrun has exited
    assert r.exit_code == 0
    for rank in (0, 1):
        assert f"[rank {rank}] rank {rank} step 5" in r.output
    doc = json.loads(cli("status", "eva-short", "-o", "json").output)
    assert doc["phase"] == "Succeeded" and doc["progress"]["step"] == 5 and doc["progress"]["eta_s"] is None


def test_local_ranks_get_the_bundles_env(cli, state_dir, cpu_bundle, monkeypatch):
    """`--env` reaches every rank of a local job, as it reaches every pod (it was silently dropped)."""
    monkeypatch.setattr("launcher.backends.local.TRAINER_ENTRYPOINT", (str(STANDIN),))
    monkeypatch.setenv("STANDIN_SHOW_ENV", "EVA_TEST_SETTING,OMP_NUM_THREADS")
    bundle = cpu_bundle(
        "eva-env",
        1,
        options={"env": (("EVA_TEST_SETTING", "hello world"), ("OMP_NUM_THREADS", "3"))},
    )
    assert cli("launch", str(bundle), "--backend", "local").exit_code == 0
    r = cli("logs", "eva-env", "-f")
    for rank in (0, 1):
        assert f"rank {rank} env EVA_TEST_SETTING=hello world" in r.output
        assert f"rank {rank} env OMP_NUM_THREADS=3" in r.output  # the user's last word
    spec = state_dir / "jobs" / "eva-env" / "supervisor-spec.json"
    assert spec.stat().st_mode & 0o777 == 0o600  # it holds the env values


def test_local_ranks_get_their_own_stop_time_from_the_budget(cli, state_dir, cpu_bundle, monkeypatch, wait):
    """With --max-cost, the ranks are told the epoch second to stop at (the supervisor's deadline
    plus its margin): the budget holds even if the supervisor and torchrun are both killed (-9)."""
    from launcher.backends.local_supervisor import RANK_DEADLINE_MARGIN_S, STOP_AT_ENV

    monkeypatch.setattr("launcher.backends.local.TRAINER_ENTRYPOINT", (str(STANDIN),))
    monkeypatch.setenv("STANDIN_SHOW_ENV", STOP_AT_ENV)
    bundle = cpu_bundle("eva-stop-at", 1)
    before = time.time()
    r = cli("launch", str(bundle), "--backend", "local", "--max-cost", "0.5", "--force")
    assert r.exit_code == 0, r.output
    spec = json.loads((state_dir / "jobs" / "eva-stop-at" / "supervisor-spec.json").read_text())
    deadline_s = spec["deadline_s"]

    def said() -> list[str]:
        return [x for x in cli("logs", "eva-stop-at").output.splitlines() if f"env {STOP_AT_ENV}=" in x]

    wait(lambda: len(said()) == 2, what="both ranks' environment", stall_s=STANDIN_WAIT_S)
    assert cli("stop", "eva-stop-at").exit_code == 0
    stop_at = float(said()[0].split("=", 1)[1])
    assert (
        before + deadline_s + RANK_DEADLINE_MARGIN_S
        <= stop_at
        <= time.time() + deadline_s + RANK_DEADLINE_MARGIN_S
    )


def test_local_refuses_plans_it_cannot_run(cli, state_dir, tmp_path, bundle_factory, monkeypatch):
    import torch

    r = cli("launch", str(bundle_factory(tmp_path / "b2", nodes=2)), "--backend", "local")
    assert r.exit_code == 2 and "spans 2 nodes" in r.output
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    r = cli("launch", str(bundle_factory(tmp_path / "b1", nodes=1, job_name="eva-8")), "--backend", "local")
    assert r.exit_code == 2 and "runs 8 ranks on one node but this machine has 2 CPUs and 0 GPUs" in r.output
    assert not (state_dir / "jobs").exists() or not any((state_dir / "jobs").iterdir())


def test_local_launch_defaults_to_the_cpu_profile_with_two_ranks(cli, state_dir):
    """`evaplan launch --backend local --model eva-clip-debug` needs no hardware or GPU count."""
    r = cli("launch", "--backend", "local", "--model", "eva-clip-debug", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "would run torchrun with 2 ranks" in r.output
    assert "nothing was created or recorded" in r.output
    # A dry run keeps nothing: the bundle it rendered (cpu profile, 2 ranks) is not stored.
    assert not (state_dir / "bundles" / "eva-clip-debug").exists()
