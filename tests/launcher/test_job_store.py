"""The job store degrades, never lies: read-only, full, corrupt, empty or newer-schema stores give
one clear line (never "internal error"); a bad row is skipped and named; writes are atomic and
serialised across processes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from launcher.monitor import CostBasis
from launcher.state import DB_NAME, SCHEMA_VERSION, JobRecord, JobStore, StoreError

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[2]


BASIS = CostBasis(nodes=1, usd_per_node_hour=1.0, total_steps=10, global_batch=4, estimate_usd=1.0)


def _rec(name: str, hours: int = 0) -> JobRecord:
    return JobRecord(
        name=name,
        backend="local",
        bundle_dir="/b",
        plan={"cost_basis": BASIS.to_dict()},
        estimate={},
        created_at=T0 + timedelta(hours=hours),
        last_phase="Stopped",
    )


def _one_error_line(r) -> str:
    assert r.exit_code in (1, 2), r.output
    assert "internal error" not in r.output and "Traceback" not in r.output
    lines = [x for x in r.output.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, r.output
    return lines[0]


def test_a_missing_store_is_empty_and_reading_creates_nothing(state_dir, cli):
    r = cli("list")
    assert r.exit_code == 0 and "no jobs" in r.output
    assert not state_dir.exists()


def test_empty_file_is_corrupt_not_an_empty_store(state_dir, cli):
    state_dir.mkdir()
    (state_dir / DB_NAME).write_bytes(b"")
    line = _one_error_line(cli("list"))
    assert "is empty (0 bytes)" in line and "corrupt" in line
    with pytest.raises(StoreError, match="empty"):
        JobStore().put(_rec("a"))
    assert (state_dir / DB_NAME).stat().st_size == 0  # not "repaired" into a fresh store


def test_garbage_file_is_corrupt(state_dir, cli):
    state_dir.mkdir()
    (state_dir / DB_NAME).write_bytes(b"this is not sqlite at all" * 100)
    line = _one_error_line(cli("list"))
    assert "corrupt" in line and "move the file aside" in line
    assert "corrupt" in _one_error_line(cli("status", "x"))


def test_newer_schema_is_refused_and_not_rewritten(state_dir, cli):
    JobStore().put(_rec("a"))
    db = state_dir / DB_NAME
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = db.read_bytes()
    line = _one_error_line(cli("list"))
    assert f"schema version {SCHEMA_VERSION + 1}" in line and "will not rewrite" in line
    with pytest.raises(StoreError, match="schema version"):
        JobStore().put(_rec("b"))
    assert db.read_bytes() == before


def test_a_bad_row_is_skipped_and_named(state_dir, cli):
    store = JobStore()
    store.put(_rec("good-old"))
    store.put(_rec("good-new", hours=1))
    store.put(_rec("broken", hours=2))
    with sqlite3.connect(state_dir / DB_NAME) as conn:
        conn.execute("UPDATE jobs SET backend_json = '{not json' WHERE name = 'broken'")
    store.put(_rec("no-basis", hours=3).with_(plan={}))
    r = cli("list", "--format", "json")
    assert r.exit_code == 0, r.output
    assert "skipped an unreadable job row 'broken'" in r.stderr
    assert "skipped job row 'no-basis'" in r.stderr
    assert '"job": "good-new"' in r.stdout and '"job": "good-old"' in r.stdout
    assert [j.name for j in JobStore().all()] == ["no-basis", "good-new", "good-old"]
    line = _one_error_line(cli("status", "broken"))
    assert "'broken'" in line and "unreadable" in line


def test_full_disk_is_one_line(state_dir, monkeypatch):
    """SQLITE_FULL for real: cap the database at the pages it has (PRAGMA max_page_count)."""
    store = JobStore()
    store.put(_rec("a"))
    real_connect = sqlite3.connect

    def capped(*a, **kw):
        conn = real_connect(*a, **kw)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(sqlite3, "connect", capped)
    big = _rec("b").with_(estimate={"blob": "x" * 200_000})
    with pytest.raises(StoreError, match="disk is full"):
        store.put(big)
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    assert [r.name for r in store.all()] == ["a"]  # nothing half-written


def _make_read_only(paths: list[Path]) -> bool:
    """Make `paths` unwritable for this user: file modes, or for root (who ignores modes) the
    immutable attribute (chattr +i). False when neither holds here."""
    for p in paths:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            return False
        for p in paths:
            if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode:
                return False
    probe = paths[0] / "probe" if paths[0].is_dir() else paths[0]
    try:
        with open(probe, "a"):
            pass
    except OSError:
        return True
    return False


def _make_writable(paths: list[Path]) -> None:
    for p in paths:
        if os.geteuid() == 0 and shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


def test_read_only_store_still_lists_and_refuses_writes_with_one_line(state_dir, cli):
    JobStore().put(
        _rec("kept").with_(backend_data={"work_dir": str(state_dir / "jobs" / "kept"), "nproc": 2})
    )
    db = state_dir / DB_NAME
    paths = [state_dir, db]
    try:
        if not _make_read_only(paths):
            pytest.skip("cannot make a folder read-only here")
        r = cli("list", "--format", "csv")
        assert r.exit_code == 0, r.output
        assert "kept" in r.stdout
        with pytest.raises(StoreError, match=r"cannot be (written|opened)"):
            JobStore().put(_rec("new"))
        r = cli("status", "kept")  # status caches the phase it saw: a write it can do without
        assert r.exit_code == 0 and "job kept (local): Failed" in r.output, r.output
        r = cli("stop", "kept")
        assert r.exit_code == 0 and "already finished" in r.output, r.output
    finally:
        _make_writable(paths)
    assert [r.name for r in JobStore().all()] == ["kept"]


WRITER = """
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from launcher.state import JobRecord, JobStore
store, base = JobStore(Path(sys.argv[1])), int(sys.argv[2])
t0 = datetime(2026, 11, 27, tzinfo=timezone.utc)
for i in range(15):
    store.put(JobRecord(name=f"job-{base + i}", backend="local", bundle_dir="/b", plan={}, estimate={},
                        created_at=t0 + timedelta(hours=base + i)))
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    """Three processes write 15 rows each at once: SQLite's lock serialises them, none is lost."""
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(k * 100)], cwd=REPO)
        for k in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=600) == 0
    assert len(JobStore(tmp_path).all()) == 45


def test_launch_into_a_read_only_state_dir_is_one_line(state_dir, cli):
    pytest.importorskip("torch")
    JobStore().put(_rec("kept"))
    paths = [state_dir, state_dir / DB_NAME]
    try:
        if not _make_read_only(paths):
            pytest.skip("cannot make a folder read-only here")
        r = cli("launch", "--backend", "local", "--model", "eva-clip-debug", "--job-name", "ro1")
        line = _one_error_line(r)
        assert r.exit_code == 1 and "cannot write" in line and "EVAPLAN_STATE_DIR" in line
    finally:
        _make_writable(paths)
    assert sorted(p.name for p in state_dir.iterdir()) == [DB_NAME]  # nothing half-written
    assert [r.name for r in JobStore().all()] == ["kept"]


def test_a_local_job_the_store_cannot_record_is_stopped_again(state_dir, cli, monkeypatch):
    """The launch intent is recorded before anything starts; when the record after the start
    cannot be written (disk full, store turned read-only meanwhile), the job is stopped again
    rather than left running unmanaged."""
    pytest.importorskip("torch")
    from launcher.backends.local_procs import job_processes
    from launcher.state import StoreError

    monkeypatch.setattr(
        "launcher.backends.local.TRAINER_ENTRYPOINT", (str(Path(__file__).with_name("standin_trainer.py")),)
    )
    JobStore().put(_rec("kept"))
    real_put = JobStore.put
    puts: list[str] = []

    def put_then_fail(self, rec):
        puts.append(rec.last_phase)
        if rec.name == "rec1" and rec.last_phase != "Creating":
            raise StoreError(f"the job store {self.path} cannot be written (disk full)", hint="free space")
        return real_put(self, rec)

    real_put_if = JobStore.put_if

    def put_if_seen(self, rec, expected):  # how a launch records its intent
        puts.append(rec.last_phase)
        return real_put_if(self, rec, expected)

    monkeypatch.setattr(JobStore, "put", put_then_fail)
    monkeypatch.setattr(JobStore, "put_if", put_if_seen)
    r = cli("launch", "--backend", "local", "--model", "eva-clip-debug", "--job-name", "rec1")
    line = _one_error_line(r)
    assert r.exit_code == 1 and "the local job was stopped again" in line, line
    assert puts[0] == "Creating"  # the intent came first
    spec = json.loads((state_dir / "jobs" / "rec1" / "supervisor-spec.json").read_text())
    assert job_processes(spec["launch_id"]) == []  # nothing of it runs unmanaged


def test_a_read_only_store_refuses_a_local_launch_before_anything_starts(state_dir, cli, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(
        "launcher.backends.local.TRAINER_ENTRYPOINT", (str(Path(__file__).with_name("standin_trainer.py")),)
    )
    JobStore().put(_rec("kept"))
    db = state_dir / DB_NAME
    try:
        if not _make_read_only([db]):
            pytest.skip("cannot make a file read-only here")
        r = cli("launch", "--backend", "local", "--model", "eva-clip-debug", "--job-name", "rec1")
        line = _one_error_line(r)
        assert r.exit_code == 1 and "cannot be written" in line, line
    finally:
        _make_writable([db])
    assert not (state_dir / "jobs" / "rec1" / "supervisor-spec.json").exists()  # nothing started
    assert [r.name for r in JobStore().all()] == ["kept"]
