"""The local supervisor with real processes (the stand-in trainer under real torchrun): a killed
torchrun or supervisor hides nothing from `status`, `stop` and `--resume`; a failed rank is named
with its reason; the budget deadline holds with no monitor; a stale op build lock is removed; the
"building DeepSpeed CPU op" activity shows; bundle paths stay inside the job's folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.backends.local import kill_job
from launcher.backends.local_procs import job_processes
from launcher.backends.local_supervisor import read_state
from launcher.state import JobStore

pytest.importorskip("torch")
STANDIN = Path(__file__).with_name("standin_trainer.py")
# Generous: torchrun plus two python ranks start in ~5 s on an idle 2-core machine; the shared
# machine runs at a load of ~8, so allow 20× that before calling a wait failed.
WAIT_S = 120.0


@pytest.fixture(autouse=True)
def _standin(monkeypatch, state_dir):
    monkeypatch.setattr("launcher.backends.local.TRAINER_ENTRYPOINT", (str(STANDIN),))
    # The stop grace is for the real trainer's checkpoint; the stand-in checkpoints at once.
    yield
    try:
        records = JobStore().all()
    except Exception:
        records = []
    for rec in records:
        if rec.backend_data.get("launch_id"):
            kill_job(rec.backend_data["launch_id"])


def _wait(pred, timeout_s: float = WAIT_S, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def bundle(cpu_bundle):
    return cpu_bundle


def _status(cli, job: str) -> dict:
    r = cli("status", job, "-o", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _launch_and_wait_for_steps(cli, bundle_dir: Path, job: str, *extra: str):
    r = cli("launch", str(bundle_dir), "--backend", "local", *extra)
    assert r.exit_code == 0, r.output
    rec = JobStore().get(job)
    metrics = Path(rec.backend_data["metrics_path"])
    _wait(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2, what="two steps")
    return rec


def _torchrun_pid(rec) -> int:
    work = Path(rec.backend_data["work_dir"])
    return _wait(lambda: read_state(work).get("torchrun_pid"), what="the supervisor's record")


def _ranks_alive(rec) -> set[int]:
    return {p.rank for p in job_processes(rec.backend_data["launch_id"]) if p.rank is not None}


@pytest.mark.slow
def test_sigkill_torchrun_ends_the_stragglers_and_says_so(cli, bundle):
    rec = _launch_and_wait_for_steps(cli, bundle(), "eva-sup")
    assert _ranks_alive(rec) == {0, 1}
    os.kill(_torchrun_pid(rec), signal.SIGKILL)
    doc = _wait(lambda: (d := _status(cli, "eva-sup"))["phase"] != "Running" and d, what="the job to end")
    # Failed only once nothing of the job lives: the supervisor ended the orphaned ranks first.
    assert job_processes(rec.backend_data["launch_id"]) == []
    assert doc["phase"] == "Failed"
    assert "torchrun was killed by SIGKILL" in doc["message"]
    assert "the supervisor ended ranks 0, 1" in doc["message"]
    r = cli("stop", "eva-sup")
    assert r.exit_code == 0 and "already finished (Failed); nothing to stop" in r.output


@pytest.mark.slow
def test_sigkill_supervisor_stops_the_job_so_its_budget_holds(cli, bundle):
    # The supervisor enforces the budget's deadline: without it no rank may train on unmanaged.
    b = bundle()
    rec = _launch_and_wait_for_steps(cli, b, "eva-sup", "--max-cost", "100")
    os.kill(rec.backend_data["pid"], signal.SIGKILL)
    _wait(lambda: job_processes(rec.backend_data["launch_id"]) == [], what="the job to stop")
    doc = _status(cli, "eva-sup")
    assert doc["phase"] == "Stopped" and "supervisor died" in doc["message"], doc
    ckpt = Path(rec.backend_data["work_dir"]) / "checkpoints" / "latest.json"
    assert json.loads(ckpt.read_text())["step"] >= 2  # SIGTERM reached the ranks: they checkpointed
    r = cli("launch", str(b), "--backend", "local", "--resume")
    assert r.exit_code == 0, r.output
    assert cli("stop", "eva-sup").exit_code == 0


@pytest.mark.slow
def test_stop_kills_what_ignores_sigterm_and_confirms(cli, bundle, monkeypatch):
    monkeypatch.setenv("STANDIN_IGNORE_TERM", "1")
    monkeypatch.setattr("launcher.backends.local.STOP_TIMEOUT_S", 3.0)
    rec = _launch_and_wait_for_steps(cli, bundle(), "eva-sup")
    r = cli("stop", "eva-sup")
    assert r.exit_code == 1, r.output
    assert "did not exit within 3s of SIGTERM; killed" in r.output and "no checkpoint guaranteed" in r.output
    assert job_processes(rec.backend_data["launch_id"]) == []
    assert _status(cli, "eva-sup")["phase"] == "Stopped"


@pytest.mark.slow
def test_a_failed_rank_is_named_with_its_reason_and_last_line(cli, bundle, monkeypatch):
    monkeypatch.setenv("STANDIN_FAIL", "1:3:7")
    r = cli("launch", str(bundle()), "--backend", "local")
    assert r.exit_code == 0, r.output
    doc = _wait(
        lambda: (d := _status(cli, "eva-sup"))["phase"] not in ("Running", "Submitted") and d, what="failure"
    )
    assert doc["phase"] == "Failed", doc
    assert doc["message"].startswith("rank 1 exited with code 7"), doc["message"]
    assert "its last line: rank 1 fails on purpose at step 3" in doc["message"]
    by_rank = {r["rank"]: r for r in doc["ranks"]}
    assert by_rank[1]["reason"] == "exit code 7" and "fails on purpose" in by_rank[1]["message"]
    assert by_rank[0]["reason"] == "rank 1 failed"
    rec = JobStore().get("eva-sup")
    assert job_processes(rec.backend_data["launch_id"]) == []
    # --rank beyond the job's ranks: one line, exit 2
    r = cli("logs", "eva-sup", "--rank", "7")
    assert r.exit_code == 2 and "has 2 ranks (0-1); there is no rank 7" in r.output


@pytest.mark.slow
def test_budget_deadline_holds_with_no_monitor(cli, bundle):
    # cpu-test bills $3.60/node-hour = $0.001 per second: a $0.003 budget buys 3 s of run time.
    r = cli("launch", str(bundle()), "--backend", "local", "--max-cost", "0.003", "--force")
    assert r.exit_code == 0, r.output
    assert "budget enforced by the job's supervisor" in r.output and "in the cluster" not in r.output
    rec = JobStore().get("eva-sup")
    assert rec.backend_data["deadline_s"] == pytest.approx(3.0)
    work = Path(rec.backend_data["work_dir"])
    _wait(lambda: read_state(work).get("finished_at"), what="the supervisor to stop the job")
    doc = _status(cli, "eva-sup")
    assert doc["phase"] == "Stopped" and "budget: the deadline of 3s" in doc["message"]
    # Spend stops with the job: billed to the supervisor's recorded end, not to now.
    time.sleep(1.5)
    later = _status(cli, "eva-sup")
    assert later["progress"]["spent_usd"] == doc["progress"]["spent_usd"] > 0
    assert job_processes(rec.backend_data["launch_id"]) == []


def test_deadline_arithmetic():
    from launcher.service import budget_deadline_s as _deadline_s

    assert _deadline_s(None, 3.6, 1, 0.0) is None
    assert _deadline_s(10.0, 0.0, 1, 0.0) is None  # a free machine (the cpu profile): no deadline
    assert _deadline_s(3.6, 3.6, 2, 0.0) == pytest.approx(1800.0)
    assert _deadline_s(3.6, 3.6, 1, 1000.0) == pytest.approx(2600.0)  # a resume: earlier run time is spent
    assert _deadline_s(1.0, 3.6, 1, 5000.0) == 0.0


@pytest.mark.slow
def test_stale_build_lock_is_removed_and_a_live_build_is_shown(cli, bundle, tmp_path, monkeypatch):
    ext = tmp_path / "torch_ext"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(ext))
    (ext / "cpu_adam").mkdir(parents=True)
    (ext / "cpu_adam" / "lock").write_text("")
    # A live build of another op (a process working in its folder) keeps its lock.
    (ext / "other_op").mkdir()
    (ext / "other_op" / "lock").write_text("")
    # Both op folders have been quiet for longer than a builder pauses (build_lock.QUIET_S).
    for folder in (ext / "cpu_adam", ext / "other_op"):
        for p in (folder / "lock", folder):
            os.utime(p, (time.time() - 600, time.time() - 600))
    builder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], cwd=ext / "other_op")
    try:
        monkeypatch.setenv("STANDIN_BUILD_DIR", str(ext / "cpu_adam"))
        r = cli("launch", str(bundle()), "--backend", "local")
        assert r.exit_code == 0, r.output
        assert f"removed a stale DeepSpeed op build lock {ext / 'cpu_adam' / 'lock'}" in r.output
        assert (ext / "other_op" / "lock").exists()
        # The stand-in's rank 0 now "builds" in ext/cpu_adam until released.
        _wait(lambda: _status(cli, "eva-sup").get("activity"), what="the build activity")
        text = cli("status", "eva-sup").output
        assert "progress: building DeepSpeed CPU op cpu_adam" in text and "no metrics yet" not in text
        (ext / "cpu_adam" / "release").write_text("")
        _wait(lambda: _status(cli, "eva-sup")["progress"]["step"], what="steps after the build")
        assert _status(cli, "eva-sup")["activity"] is None
        assert not (ext / "cpu_adam" / "lock").exists()  # released by the finished build
        stopped = cli("stop", "eva-sup")
        assert stopped.exit_code == 0, stopped.output
    finally:
        builder.kill()
        builder.wait(timeout=60)


@pytest.mark.slow
def test_stop_during_an_op_build_leaves_no_lock(cli, bundle, tmp_path, monkeypatch):
    ext = tmp_path / "torch_ext"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(ext))
    monkeypatch.setenv("STANDIN_BUILD_DIR", str(ext / "cpu_adam"))
    assert cli("launch", str(bundle()), "--backend", "local").exit_code == 0
    _wait(lambda: _status(cli, "eva-sup").get("activity"), what="the build activity")
    assert (ext / "cpu_adam" / "lock").exists()
    r = cli("stop", "eva-sup")
    assert r.exit_code == 0, r.output
    assert not (ext / "cpu_adam" / "lock").exists()
    assert (
        f"# evaplan stop: removed the DeepSpeed op build lock {ext / 'cpu_adam' / 'lock'} its stopped build left"
        in (cli("logs", "eva-sup").output)
    )
    doc = _status(cli, "eva-sup")
    assert doc["phase"] == "Stopped" and doc["message"] == "stopped by `evaplan stop`"


def test_bundle_paths_are_confined_to_the_job_folder(cli, bundle, state_dir, resign):
    b = bundle()
    rc_path = b / "run_config.json"
    original = json.loads(rc_path.read_text())
    for field, value, words in (
        ("output_dir", "../../escape", "climbs out of the job folder"),
        ("output_dir", "/etc/evaplan", "is an absolute path"),
        ("checkpoint.dir", "/home/someone/ckpt", "is an absolute path"),
        ("checkpoint.dir", "a/../../../x", "climbs out of the job folder"),
    ):
        rc = json.loads(json.dumps(original))
        if field == "output_dir":
            rc["output_dir"] = value
        else:
            rc["checkpoint"]["dir"] = value
        rc_path.write_text(json.dumps(rc))
        resign(b)  # as its key's holder could: the confinement holds behind the signature too
        r = cli("launch", str(b), "--backend", "local")
        assert r.exit_code == 2, r.output
        assert f"run_config.json: {field} {value!r} {words}" in r.output
        assert not (state_dir / "jobs").exists()  # refused before anything was written
    rc_path.write_text(json.dumps(original))
    resign(b)

    # A symbolic link in the job folder that leads outside is refused on --resume.
    rec = _launch_and_wait_for_steps(cli, b, "eva-sup")
    stopped = cli("stop", "eva-sup")
    assert stopped.exit_code == 0, stopped.output
    work = Path(rec.backend_data["work_dir"])
    outside = state_dir.parent / "outside"
    outside.mkdir()
    (work / "output").rename(work / "output.real") if (work / "output").exists() else None
    (work / "output").symlink_to(outside)
    r = cli("launch", str(b), "--backend", "local", "--resume")
    assert r.exit_code == 2 and "leads outside" in r.output, r.output
    assert list(outside.iterdir()) == []


def test_a_crafted_job_name_is_refused_on_read(cli, bundle, tmp_path, resign):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    b = bundle()
    meta = json.loads((b / "bundle.json").read_text())
    for name in (str(victim), "../victim", "Eva_Sup"):
        meta["job_name"] = name
        (b / "bundle.json").write_text(json.dumps(meta))
        rc = json.loads((b / "run_config.json").read_text())
        rc["job_name"] = name
        (b / "run_config.json").write_text(json.dumps(rc))
        r = cli("launch", str(b), "--backend", "local", "--replace")
        assert r.exit_code == 2 and "not signed with this job store's key" in r.output, r.output
        resign(b)  # the name is checked behind the signature too
        r = cli("launch", str(b), "--backend", "local", "--replace")
        assert r.exit_code == 2 and ("job name" in r.output or "run_config.json: job_name" in r.output), (
            r.output
        )
        assert "internal error" not in r.output
    assert (victim / "precious").read_text() == "keep me"


@pytest.mark.slow
def test_a_refused_launch_leaves_the_stored_bundle_as_it_was(cli, state_dir, cpu_hardware):
    flags = ["--profiles-dir", cpu_hardware[0], "launch", "--backend", "local", "--model", "eva-clip-debug"]
    flags += ["--hardware", "cpu-2", "--nodes", "1", "--offering", "cpu-test", "--job-name", "long1"]
    r = cli(*flags, "--samples", "40000")
    assert r.exit_code == 0, r.output
    stored = state_dir / "bundles" / "long1"
    before = {p.name: p.read_bytes() for p in stored.iterdir()}
    work = Path(JobStore().get("long1").backend_data["work_dir"])
    run_before = (work / "run_config.json").read_bytes()
    r = cli(*flags, "--samples", "200000")
    assert r.exit_code == 2 and "was launched already" in r.output, r.output
    assert {p.name: p.read_bytes() for p in stored.iterdir()} == before
    assert (work / "run_config.json").read_bytes() == run_before
    assert not [p for p in (state_dir / "bundles").iterdir() if p.name.startswith(".")]
    stopped = cli("stop", "long1")
    assert stopped.exit_code == 0, stopped.output


@pytest.mark.slow
def test_a_lock_whose_builder_dies_after_launch_is_swept_by_the_supervisor(
    cli, bundle, tmp_path, monkeypatch
):
    from launcher.backends import build_lock
    from launcher.backends.local_supervisor import LOCK_SWEEP_S

    monkeypatch.setattr(build_lock, "QUIET_S", 3.0)  # launch passes it on to the supervisor
    ext = tmp_path / "torch_ext"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(ext))
    (ext / "cpu_adam").mkdir(parents=True)
    (ext / "cpu_adam" / "lock").write_text("")
    builder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], cwd=ext / "cpu_adam")
    try:
        r = cli("launch", str(bundle()), "--backend", "local")
        assert r.exit_code == 0 and "stale DeepSpeed op build lock" not in r.output, r.output  # live then
    finally:
        builder.kill()  # the build dies with its lock held, after our launch
        builder.wait(timeout=60)
    _wait(
        lambda: not (ext / "cpu_adam" / "lock").exists(),
        timeout_s=WAIT_S + build_lock.QUIET_S + 2 * LOCK_SWEEP_S,
        what="the supervisor's sweep",
    )
    assert "# evaplan supervisor: removed a stale DeepSpeed op build lock" in cli("logs", "eva-sup").output
    stopped = cli("stop", "eva-sup")
    assert stopped.exit_code == 0, stopped.output


# --------------------------------------------------------------------------- an interrupted launch
DRIVER = Path(__file__).with_name("launch_driver.py")


@pytest.fixture
def paused_launch(tmp_path, state_dir):
    """launch(bundle) → a real `evaplan launch --backend local` process, paused once its supervisor
    runs, and the job's launch id (from the supervisor's spec); whatever it started is killed after."""
    started: list[str] = []

    def launch(bundle_dir: Path) -> tuple[subprocess.Popen, str]:
        proc, launch_id = _launch_paused_after_supervisor(bundle_dir, tmp_path / "ready", state_dir)
        started.append(launch_id)
        return proc, launch_id

    yield launch
    for launch_id in started:
        kill_job(launch_id)


def _launch_paused_after_supervisor(
    bundle_dir: Path, ready: Path, state: Path
) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(ready), "launch", str(bundle_dir), "--backend", "local"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait(lambda: ready.is_file() or proc.poll() is not None, what="the supervisor to start")
    assert ready.is_file(), proc.communicate()[0]
    spec = json.loads((state / "jobs" / "eva-sup" / "supervisor-spec.json").read_text())
    return proc, spec["launch_id"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_supervisor_starts_ends_what_it_started(sig, bundle, paused_launch):
    proc, launch_id = paused_launch(bundle())
    assert job_processes(launch_id)  # the supervisor runs
    proc.send_signal(sig)
    out = proc.communicate(timeout=WAIT_S)[0]
    assert proc.returncode == 130 and "interrupted" in out, out
    # The launch unwound: nothing it started trains on unmanaged, and nothing is recorded.
    assert job_processes(launch_id) == []
    assert JobStore().find("eva-sup") is None


@pytest.mark.slow
def test_sigkill_while_the_supervisor_starts_leaves_a_job_status_stop_and_resume_handle(
    cli, bundle, paused_launch
):
    b = bundle()
    proc, launch_id = paused_launch(b)
    proc.kill()
    proc.wait(timeout=WAIT_S)
    _wait(
        lambda: {p.rank for p in job_processes(launch_id) if p.rank is not None} == {0, 1},
        what="both ranks to start",
    )
    doc = _status(cli, "eva-sup")  # the job the killed launch started is shown, ranks and all
    assert doc["phase"] == "Running" and [r["phase"] for r in doc["ranks"]] == ["Running", "Running"]
    assert "eva-sup" in cli("list").output
    r = cli("launch", str(b), "--backend", "local", "--resume")
    assert r.exit_code == 2 and "still running" in r.output, r.output
    r = cli("stop", "eva-sup")
    assert r.exit_code == 0 and "stopped eva-sup" in r.output, r.output
    assert job_processes(launch_id) == []
    assert _status(cli, "eva-sup")["phase"] == "Stopped"
    r = cli("launch", str(b), "--backend", "local", "--resume")
    assert r.exit_code == 0, r.output
    assert cli("stop", "eva-sup").exit_code == 0


@pytest.mark.slow
def test_stop_ends_the_job_when_its_folder_cannot_be_written(cli, bundle):
    """On a full disk `stop` cannot write its marker file (here a folder stands in its place,
    which fails the same write): the job is stopped all the same, with no internal error."""
    rec = _launch_and_wait_for_steps(cli, bundle(), "eva-sup")
    (Path(rec.backend_data["work_dir"]) / "stopped").mkdir()
    r = cli("stop", "eva-sup")
    assert r.exit_code == 0 and "stopped eva-sup" in r.output, r.output
    assert job_processes(rec.backend_data["launch_id"]) == []


def test_a_recorded_outcome_holds_while_the_supervisor_exits(tmp_path, monkeypatch):
    """Once the supervisor has recorded the outcome (finished_at), torchrun and every rank have ended; in
    the moment before the supervisor itself exits, status reports that outcome, not Running. A process
    of the job other than the supervisor still means Running."""
    from launcher.backends.local import LocalBackend
    from launcher.backends.local_procs import JobProcess
    from launcher.backends.local_supervisor import STATE_FILE
    from launcher.state import JobRecord

    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "phase": "Stopped",
                "message": "budget: the deadline of 3s",
                "finished_at": "2026-12-07T12:00:00+00:00",
                "started_at": "2026-12-07T11:59:57+00:00",
            }
        )
    )
    record = JobRecord(
        name="eva-sup",
        backend="local",
        bundle_dir=str(tmp_path),
        plan={},
        estimate={},
        backend_data={"work_dir": str(tmp_path), "pid": 4242, "launch_id": "x", "nproc": 2},
    )
    backend = LocalBackend()
    supervisor = JobProcess(pid=4242, start_ticks=None, rank=None, cwd=None)
    monkeypatch.setattr(backend, "_live", lambda _record: [supervisor])
    state = backend.state(record)
    assert state.phase == "Stopped" and state.message == "budget: the deadline of 3s"
    rank = JobProcess(pid=4243, start_ticks=None, rank=0, cwd=None)
    monkeypatch.setattr(backend, "_live", lambda _record: [supervisor, rank])
    assert backend.state(record).phase == "Running"
