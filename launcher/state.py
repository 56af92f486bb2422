"""The local job store: one SQLite file under the user's state dir, one row per launched job.

A row is what `status`, `logs`, `stop` and `list` need to find a job again without the user
repeating flags: the backend and where it runs (namespace, kubeconfig context, local pid), the
plan and the planner's estimate it was launched from, the budget, and the times that cost is
computed from (dollars spent = elapsed node-hours × $/node-hour, so `started_at` matters).

State dir: $EVAPLAN_STATE_DIR, else $XDG_STATE_HOME/evaplan, else ~/.local/state/evaplan
(XDG Base Directory spec: "state data that should persist between restarts").
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from planner.errors import EvaplanError

SCHEMA_VERSION = 1
DB_NAME = "jobs.sqlite3"

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
    """CRUD over the jobs table; every write is one transaction (no half-written rows)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_dir()
        self.path = self.root / DB_NAME

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0)
        except (OSError, sqlite3.Error) as e:
            raise EvaplanError(
                f"cannot open the job store {self.path}: {e}",
                hint="set EVAPLAN_STATE_DIR to a writable folder",
            ) from e
        try:
            with conn:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                yield conn
        finally:
            conn.close()

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
        return JobRecord(
            name=name,
            backend=backend,
            namespace=namespace,
            bundle_dir=bundle_dir,
            plan=json.loads(plan_json),
            estimate=json.loads(estimate_json),
            max_cost_usd=max_cost_usd,
            created_at=_parse(created_at) or utcnow(),
            started_at=_parse(started_at),
            finished_at=_parse(finished_at),
            last_phase=last_phase,
            backend_data=json.loads(backend_json),
        )

    def put(self, rec: JobRecord) -> None:
        """Insert or replace the row of `rec.name`."""
        with self._connect() as conn:
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

    def find(self, name: str) -> JobRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        return self._row(row) if row else None

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
        """Every job, newest first."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM jobs ORDER BY created_at DESC").fetchall()
        return [self._row(r) for r in rows]

    def delete(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM jobs WHERE name = ?", (name,))
