"""The local job store: one SQLite file under the user's state dir, one row per launched job.

A row is what `status`, `logs`, `stop` and `list` need to find a job again without the user
repeating flags: the backend and where it runs (namespace, kubeconfig context, local pid), the
plan and the planner's estimate it was launched from, the budget, and the times that cost is
computed from (dollars spent = elapsed node-hours × $/node-hour, so `started_at` matters).

State dir: $EVAPLAN_STATE_DIR, else $XDG_STATE_HOME/evaplan, else ~/.local/state/evaplan
(XDG Base Directory spec: "state data that should persist between restarts").
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from planner.errors import EvaplanError, RuntimeFailure

SCHEMA_VERSION = 1
DB_NAME = "jobs.sqlite3"
# How long a writer waits for another writer's lock before giving up with a clear line.
LOCK_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name           TEXT PRIMARY KEY,
    backend        TEXT NOT NULL,
    namespace      TEXT,
    bundle_dir     TEXT NOT NULL,
    plan_json      TEXT NOT NULL,
    estimate_json  TEXT NOT NULL,
    max_cost_usd   REAL,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    last_phase     TEXT NOT NULL,
    backend_json   TEXT NOT NULL
);
"""


class JobNotFound(EvaplanError):
    """A job name the store does not know."""


class JobChanged(EvaplanError):
    """The job's row changed under a launch (another launch of the same name recorded it first)."""


class StoreError(RuntimeFailure):
    """The job store cannot be read or written (read-only, full, corrupt, newer schema)."""


def state_dir() -> Path:
    """Where evaplan keeps job records and local-backend work folders."""
    env = os.environ.get("EVAPLAN_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "evaplan"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _parse(t: str | None) -> datetime | None:
    return datetime.fromisoformat(t) if t else None


@dataclass(frozen=True)
class JobRecord:
    """One launched job as the store remembers it."""

    name: str
    backend: str
    bundle_dir: str
    plan: dict[str, Any]
    estimate: dict[str, Any]
    namespace: str | None = None
    max_cost_usd: float | None = None
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_phase: str = "Submitted"
    # Backend-specific handles: kubeconfig/context for kubernetes, pid/pgid/work_dir for local.
    backend_data: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> JobRecord:
        return replace(self, **changes)


class JobStore:
    """CRUD over the jobs table.

    Degrades, never lies: reading never writes (a read-only state dir still lists its jobs); a
    missing file is "no jobs", but an empty or unreadable one is reported as corrupt, not taken for
    an empty store; a store written by a newer evaplan (PRAGMA user_version above ours) is refused
    and never rewritten; a row that does not parse is skipped and named (`skipped`), the others
    are still served. Every write is one SQLite transaction: SQLite's rollback journal (fsynced
    before the database is touched) makes it atomic, and its file locks serialise concurrent
    writers (we wait up to `LOCK_TIMEOUT_S` for the lock).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_dir()
        self.path = self.root / DB_NAME
        # "name: why" for each row the last read skipped.
        self.skipped: list[str] = []

    # ------------------------------------------------------------------ connections
    def _check_file(self) -> None:
        """Refuse a store file that SQLite would silently treat as an empty database."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError(f"cannot read the job store {self.path}: {e.strerror}", hint=_HINT_DIR) from None
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"the job store {self.path} is not a regular file", hint=_HINT_MOVE)
        if st.st_size == 0:
            raise StoreError(
                f"the job store {self.path} is empty (0 bytes): it is corrupt, not a store without jobs",
                hint=_HINT_MOVE,
            )

    def _check_version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the job store {self.path} has schema version {version}; this evaplan knows version "
                f"{SCHEMA_VERSION} and will not rewrite it",
                hint="use the newer evaplan that wrote it, or point EVAPLAN_STATE_DIR elsewhere",
            )
        return version

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection, or None when there is no store yet (reading creates nothing)."""
        self._check_file()
        if not self.path.exists():
            yield None
            return
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=LOCK_TIMEOUT_S
            )
        except sqlite3.Error as e:
            raise _classify(e, self.path, "open") from None
        try:
            try:
                version = self._check_version(conn)
                has_table = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
                ).fetchone()
            except sqlite3.Error as e:
                raise _classify(e, self.path, "read") from None
            if not has_table:
                if version:
                    raise StoreError(f"the job store {self.path} has no jobs table", hint=_HINT_MOVE)
                yield None
                return
            yield conn
        finally:
            conn.close()

    def _create(self) -> None:
        """A new store appears whole: built as a temporary file, fsynced, then linked into place
        (link never replaces: if another evaplan created it first, theirs is kept). Without this a
        second process could open the empty file that sqlite3.connect creates and take it for corrupt."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{DB_NAME}.", dir=self.root)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            conn = sqlite3.connect(tmp)
            try:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.commit()
            finally:
                conn.close()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
        except sqlite3.Error as e:
            raise _classify(e, self.path, "write") from None
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
        self._check_file()
        try:
            if not self.path.exists():
                self._create()
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=rw",
                uri=True,
                timeout=LOCK_TIMEOUT_S,
                isolation_level=None,
            )
        except OSError as e:
            raise _os_error(e, self.path) from None
        except sqlite3.Error as e:
            raise _classify(e, self.path, "open") from None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._check_version(conn)
                if version == 0:
                    conn.execute(_SCHEMA)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise _classify(e, self.path, "write") from None
        finally:
            conn.close()

    # ------------------------------------------------------------------ rows
    @staticmethod
    def _row(row: tuple[Any, ...]) -> JobRecord:
        (
            name,
            backend,
            namespace,
            bundle_dir,
            plan_json,
            estimate_json,
            max_cost_usd,
            created_at,
            started_at,
            finished_at,
            last_phase,
            backend_json,
        ) = row
        rec = JobRecord(
            name=name,
            backend=backend,
            namespace=namespace,
            bundle_dir=bundle_dir,
            plan=json.loads(plan_json),
            estimate=json.loads(estimate_json),
            max_cost_usd=None if max_cost_usd is None else float(max_cost_usd),
            created_at=_parse(created_at) or utcnow(),
            started_at=_parse(started_at),
            finished_at=_parse(finished_at),
            last_phase=last_phase,
            backend_data=json.loads(backend_json),
        )
        for field_name in ("name", "backend", "bundle_dir", "last_phase"):
            if not isinstance(getattr(rec, field_name), str):
                raise ValueError(f"{field_name} is not text")
        for field_name in ("plan", "estimate", "backend_data"):
            if not isinstance(getattr(rec, field_name), dict):
                raise ValueError(f"{field_name} is not a JSON object")
        return rec

    def _rows(self, conn: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[JobRecord]:
        out: list[JobRecord] = []
        self.skipped = []
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise _classify(e, self.path, "read") from None
        for row in rows:
            try:
                out.append(self._row(row))
            except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
                self.skipped.append(f"{str(row[0])[:80]!r}: {str(e)[:120]}")
        return out

    def put(self, rec: JobRecord) -> None:
        """Insert or replace the row of `rec.name` (atomically: all of it or nothing)."""
        with self._write() as conn:
            self._insert(conn, rec)

    @staticmethod
    def _insert(conn: sqlite3.Connection, rec: JobRecord) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                rec.name,
                rec.backend,
                rec.namespace,
                rec.bundle_dir,
                json.dumps(rec.plan),
                json.dumps(rec.estimate),
                rec.max_cost_usd,
                _iso(rec.created_at),
                _iso(rec.started_at),
                _iso(rec.finished_at),
                rec.last_phase,
                json.dumps(rec.backend_data),
            ),
        )

    def put_if(self, rec: JobRecord, expected: JobRecord | None) -> None:
        """`put`, only if the stored row of `rec.name` is still `expected` (None: no row), checked in
        the same transaction: of two launches of one name, the second to record its intent is
        refused instead of overwriting the first one's."""
        with self._write() as conn:
            rows = self._rows(conn, "SELECT * FROM jobs WHERE name = ?", (rec.name,))
            now = rows[0] if rows else None
            if _fingerprint(now) != _fingerprint(expected):
                raise JobChanged(
                    f"job '{rec.name}' was recorded by another launch meanwhile"
                    + (f" ({now.backend}, {now.last_phase})" if now is not None else " (and then removed)"),
                    hint="`evaplan list` shows it; launch again once it is done, or render with another --job-name",
                )
            self._insert(conn, rec)

    def remember(self, rec: JobRecord) -> str | None:
        """`put` for what is only a cache of the backend's truth (the last phase seen): a store that
        cannot be written does not stop `status` or `list`; returns the reason when not written."""
        try:
            self.put(rec)
        except StoreError as e:
            return e.message
        return None

    def find(self, name: str) -> JobRecord | None:
        with self._read() as conn:
            if conn is None:
                return None
            rows = self._rows(conn, "SELECT * FROM jobs WHERE name = ?", (name,))
        if self.skipped:
            raise StoreError(
                f"the job store's row for {self.skipped[0]} is unreadable",
                hint=f"`evaplan list` shows the other jobs; remove this one's row from {self.path}",
            )
        return rows[0] if rows else None

    def get(self, name: str | None) -> JobRecord:
        """The named job, or the most recent one when `name` is None."""
        if name is None:
            jobs = self.all()
            if not jobs:
                raise JobNotFound("no jobs launched yet", hint="`evaplan launch ...` first")
            return jobs[0]
        rec = self.find(name)
        if rec is None:
            known = ", ".join(j.name for j in self.all()[:10]) or "none"
            raise JobNotFound(f"no job named '{name}' in {self.path}", hint=f"known jobs: {known}")
        return rec

    def all(self) -> list[JobRecord]:
        """Every readable job, newest first (unreadable rows are named in `skipped`)."""
        with self._read() as conn:
            if conn is None:
                self.skipped = []
                return []
            rows = self._rows(conn, "SELECT * FROM jobs")
        return sorted(rows, key=lambda r: _aware(r.created_at), reverse=True)

    def delete(self, name: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM jobs WHERE name = ?", (name,))


_HINT_DIR = "set EVAPLAN_STATE_DIR to a readable, writable folder"
_HINT_MOVE = "move the file aside (evaplan starts a new store) or set EVAPLAN_STATE_DIR elsewhere"


def _fingerprint(rec: JobRecord | None) -> tuple[Any, ...] | None:
    """What tells two versions of a job's row apart (a launch changes its phase or handles)."""
    if rec is None:
        return None
    return (rec.backend, _iso(rec.created_at), rec.last_phase, json.dumps(rec.backend_data, sort_keys=True))


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _os_error(e: OSError, path: Path) -> StoreError:
    if e.errno == errno.ENOSPC:
        return StoreError(f"the job store {path} cannot be written: the disk is full", hint="free space")
    return StoreError(f"the job store {path} cannot be written: {e.strerror}", hint=_HINT_DIR)


def _classify(e: sqlite3.Error, path: Path, doing: str) -> StoreError:
    """One line per kind of SQLite failure (sqlite3 error codes, Python 3.11+: `sqlite_errorcode`)."""
    code = getattr(e, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(e)
    if primary == sqlite3.SQLITE_FULL or "disk is full" in text:
        return StoreError(f"the job store {path} cannot be written: the disk is full", hint="free space")
    if (
        primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN)
        or "readonly" in text
    ):
        return StoreError(
            f"the job store {path} cannot be {'written' if doing == 'write' else 'opened'} ({text})",
            hint=_HINT_DIR,
        )
    if primary == sqlite3.SQLITE_BUSY or "locked" in text:
        return StoreError(
            f"the job store {path} stayed locked by another evaplan for {LOCK_TIMEOUT_S:.0f}s",
            hint="retry when the other command has finished",
        )
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "not a database" in text:
        return StoreError(f"the job store {path} is corrupt ({text})", hint=_HINT_MOVE)
    return StoreError(f"cannot {doing} the job store {path}: {text}", hint=_HINT_DIR)
