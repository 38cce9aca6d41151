"""The embedded store: one SQLite file (WAL) holding runs, job states and fire claims.

Records are SPEC §4 run dicts stored as JSON with a schema version (never pickle). A row
this code cannot read is reported, never deleted. One daemon per file (a lock file).

Durability. A commit survives a `kill -9` at any instant. Under the default
`synchronous=NORMAL` a power loss (or an OS crash) may undo the last commits before the
next checkpoint: claims and their first records vanish together, so those fires run
again after the restart, and a run whose end was undone shows `interrupted`. With
`settings.durability: "full"` every commit waits for the disk (`synchronous=FULL`),
which costs a flush per wake.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

from poller.errors import PollerError, StateFileError
from poller.filemodes import make_private, tighten
from poller.store import migrate
from poller.store.base import Claim, JobState, StoreError
from poller.store.writer import Recordable, RecordQueue

log = logging.getLogger(__name__)

SCHEMA_VERSION = migrate.SCHEMA_VERSION
SAVE_SQL = "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
# A claim moves the job's last fire forward, or (for a job without a state yet) starts
# one anchored at that fire; it changes no row when the fire is not after the last one.
CLAIM_SQL = (
    "INSERT INTO jobs (job_id, grid, anchor, last_fire) VALUES (?1, NULL, ?2, ?2) "
    "ON CONFLICT (job_id) DO UPDATE SET last_fire = excluded.last_fire "
    "WHERE last_fire IS NULL OR last_fire < excluded.last_fire"
)
FIRST_RECORD_SQL = "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
Durability = Literal["normal", "full"]


def iso(instant: datetime) -> str:
    """A fixed-width UTC timestamp, so stored instants compare and sort as text."""
    return instant.astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


class DatabaseLockedError(PollerError):
    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        super().__init__(
            f"{path} is in use by another Poller daemon ({holder}); "
            "stop it first, or give this one its own settings.state_db"
        )


class SqliteStore:
    """One connection shared by the loop, the writer thread and the workers, behind a lock.

    The lock (not SQLite's busy handler, which sleeps in steps of milliseconds) orders
    the loop's one claim transaction per wake and the writer's batches.
    """

    def __init__(self, path: str | Path, durability: Durability = "normal") -> None:
        self.path = Path(path)
        self.durability = durability
        self._lock = threading.RLock()
        self._lock_file: IO[str] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            make_private(self.path)
            self._db = sqlite3.connect(
                self.path, timeout=10, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={durability.upper()}")
            self._db.execute("PRAGMA busy_timeout=10000")
            self.schema_version = migrate.prepare(self._db)
            tighten(self.path)
        except (OSError, sqlite3.Error) as err:
            raise StateFileError(self.path, err) from None
        self._queue = RecordQueue(self._write_batch, name="history-writer")

    def acquire_daemon_lock(self) -> None:
        """Hold an exclusive lock for this process's life, then bring the schema up to date.

        Raises DatabaseLockedError when another daemon holds it, StateFileError when the
        file cannot be migrated (it is then left as it was).
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        make_private(lock_path)
        tighten(lock_path)
        handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held until exit
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown pid"
            handle.close()
            raise DatabaseLockedError(self.path, holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock_file = handle
        if self.schema_version < SCHEMA_VERSION:
            with self._lock:
                migrate.upgrade(self._db, self.path, self.schema_version)
            self.schema_version = SCHEMA_VERSION

    def open_reader(self) -> SqliteStore:
        return SqliteStore(self.path, self.durability)

    def close(self) -> None:
        self._queue.close()
        with self._lock:
            self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()

    # --- the hot path ----------------------------------------------------------------

    def claim(self, claims: Sequence[Claim]) -> list[bool]:
        rows = [(claim, _result_row(claim.record)) for claim in claims]  # outside the lock
        claimed: list[bool] = []
        with self._writing("claiming fires"):
            for claim, row in rows:
                moved = self._db.execute(CLAIM_SQL, (claim.job_id, row[3])).rowcount
                claimed.append(
                    bool(moved) and bool(self._db.execute(FIRST_RECORD_SQL, row).rowcount)
                )
        return claimed

    def save(self, record: Any) -> None:
        row = _record_row(record) if isinstance(record, dict) else _result_row(record)
        with self._writing("saving a run record"):
            self._db.execute(SAVE_SQL, row)

    def save_later(self, record: Recordable) -> None:
        """Queue a record; get() sees it at once, recent() and totals() once written."""
        self._queue.add(record)

    def flush(self) -> None:
        self._queue.flush()

    def failing(self) -> str | None:
        return self._queue.failing

    def check_writable(self) -> None:
        with self._writing("checking the state database"):
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('checked_at', ?)", (iso(datetime.now(UTC)),)
            )

    def queued(self, run_id: str) -> dict[str, Any] | None:
        """A run's newest record while it waits for the writer, else None."""
        result = self._queue.queued(run_id)
        return None if result is None else result.to_dict()

    def _write_batch(self, results: list[Recordable]) -> None:
        rows = [_result_row(result) for result in results]  # before the lock is taken
        with self._writing("writing run records"):
            self._db.executemany(SAVE_SQL, rows)

    # --- job state -------------------------------------------------------------------

    def job_states(self) -> dict[str, JobState]:
        rows = self._read("SELECT job_id, grid, anchor, last_fire FROM jobs", ())
        return {
            job_id: JobState(grid, parse_iso(anchor), parse_iso(last) if last else None)
            for job_id, grid, anchor, last in rows
        }

    def save_job_states(self, states: dict[str, JobState]) -> None:
        stamps: dict[datetime, str] = {}  # a start or reload gives every new job one anchor
        rows = [
            (
                job_id,
                state.grid,
                stamps.get(state.anchor) or stamps.setdefault(state.anchor, iso(state.anchor)),
            )
            for job_id, state in states.items()
        ]
        with self._writing("saving job states"):
            self._db.executemany(
                "INSERT INTO jobs (job_id, grid, anchor) VALUES (?1, ?2, ?3) "
                "ON CONFLICT (job_id) DO UPDATE SET grid = ?2, anchor = ?3",
                rows,
            )

    # --- reads -----------------------------------------------------------------------

    def get(self, run_id: str) -> dict[str, Any] | None:
        queued = self.queued(run_id)
        if queued is not None:
            return queued
        rows = self._read("SELECT run_id, version, record FROM runs WHERE run_id = ?", (run_id,))
        return _decode(rows[0]) if rows else None

    def recent(
        self, job_id: str | None = None, limit: int = 20, status: str | None = None
    ) -> list[dict[str, Any]]:
        where, args = [], []
        if job_id is not None:
            where.append("job_id = ?")
            args.append(job_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT run_id, version, record FROM runs {clause} "
            "ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (*args, limit),
        )
        return [_decode(row) for row in rows]

    def briefs(self, job_ids: list[str], per_job: int) -> dict[str, list[dict[str, Any]]]:
        """The newest `per_job` runs of each job, newest first, in brief.

        Read in one query that takes `per_job` index entries of each job and decodes no
        whole record in Python (GET /jobs shows a page of jobs at once). A row that
        recent() would report unreadable has the status "unreadable".
        """
        rows = self._read(
            "SELECT run.job_id, run.run_id, CASE WHEN run.version <= ?2 "
            "AND json_valid(run.record) THEN run.status ELSE 'unreadable' END, "
            "run.trigger, run.started_at, CASE WHEN json_valid(run.record) THEN MAX(0, CAST(ROUND("
            "(julianday(json_extract(run.record, '$.finished_at')) - julianday(run.started_at)) "
            "* 86400000) AS INTEGER)) END "
            "FROM json_each(?1) AS job JOIN runs AS run ON run.rowid IN "
            "(SELECT rowid FROM runs WHERE job_id = job.value "
            "ORDER BY started_at DESC, rowid DESC LIMIT ?3) "
            "ORDER BY job.key, run.started_at DESC, run.rowid DESC",
            (json.dumps(job_ids), migrate.RECORD_VERSION, per_job),
        )
        found: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
        for job_id, run_id, status, trigger, started_at, duration_ms in rows:
            found[job_id].append(
                {
                    "run_id": run_id,
                    "status": status,
                    "trigger": trigger,
                    "started_at": started_at,
                    "duration_ms": duration_ms,
                }
            )
        return found

    def totals(self) -> dict[str, int]:
        rows = self._read("SELECT status, COUNT(*) FROM runs GROUP BY status", ())
        return {str(status): int(count) for status, count in rows}

    # --- housekeeping ----------------------------------------------------------------

    def mark_interrupted(self, reason: str, now: datetime) -> int:
        rows = self._read("SELECT run_id, version, record FROM runs WHERE status = 'running'", ())
        records = [_decode(row) for row in rows]
        updated = [
            _record_row(
                {
                    **record,
                    "status": "interrupted",
                    "reason": reason,
                    "finished_at": now.isoformat(),
                }
            )
            for record in records
            if record.get("status") != "unreadable"
        ]
        with self._writing("marking runs interrupted"):
            self._db.executemany(SAVE_SQL, updated)
        return len(rows)

    def prune(self, max_age_days: int, max_runs_per_job: int, now: datetime) -> int:
        cutoff = iso(now - timedelta(days=max_age_days))
        with self._writing("pruning the history"):
            deleted = self._db.execute(
                "DELETE FROM runs WHERE started_at < ? AND status != 'running'", (cutoff,)
            ).rowcount
            over = self._db.execute(
                "SELECT job_id FROM runs GROUP BY job_id HAVING COUNT(*) > ?",
                (max_runs_per_job,),
            ).fetchall()
            for (job_id,) in over:
                deleted += self._db.execute(
                    "DELETE FROM runs WHERE run_id IN (SELECT run_id FROM runs WHERE job_id = ? "
                    "AND status != 'running' ORDER BY started_at DESC, rowid DESC "
                    "LIMIT -1 OFFSET ?)",
                    (job_id, max_runs_per_job),
                ).rowcount
        return int(deleted)

    # --- plumbing --------------------------------------------------------------------

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """One transaction; any failure rolls it all back and becomes a StoreError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                if self._db.in_transaction:  # some errors have already rolled it back
                    self._db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: {what}", err) from None

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as err:
                raise StoreError(f"{self.path}: reading", err) from None


def _result_row(result: Recordable) -> tuple[Any, ...]:
    return _columns(result.to_dict(), result.scheduled_for, result.started_at)


def _record_row(record: dict[str, Any]) -> tuple[Any, ...]:
    scheduled = record.get("scheduled_for")
    started = record.get("started_at") or scheduled
    return _columns(
        record,
        datetime.fromisoformat(scheduled) if scheduled else None,
        datetime.fromisoformat(started) if started else datetime.now(UTC),
    )


def _columns(
    record: dict[str, Any], scheduled: datetime | None, started: datetime
) -> tuple[Any, ...]:
    """A runs row: the record's columns (instants fixed-width UTC) and its JSON."""
    return (
        record["run_id"],
        record["job_id"],
        record["trigger"],
        None if scheduled is None else iso(scheduled),
        iso(started),
        record["status"],
        migrate.RECORD_VERSION,
        json.dumps(record, separators=(",", ":"), default=str),
    )


def _decode(row: tuple[str, int, str]) -> dict[str, Any]:
    run_id, version, text = row
    problem = None
    if version > migrate.RECORD_VERSION:
        problem = f"written by a newer Poller (record version {version})"
    else:
        try:
            record = json.loads(text)
        except ValueError as err:
            problem = f"not valid JSON ({err})"
        else:
            if isinstance(record, dict):
                return record
            problem = "not a JSON object"
    log.warning("run %s in the history cannot be read: %s; it is kept as it is", run_id, problem)
    return {"run_id": run_id, "status": "unreadable", "reason": problem}
