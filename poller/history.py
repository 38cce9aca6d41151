"""The run history and per-job schedule state, in SQLite (WAL): every fire lands here.

Records are SPEC §4 run dicts stored as JSON with a schema version (never pickle). A row
this code cannot read is reported, never deleted. One daemon per database (a lock file).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from poller.errors import PollerError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    scheduled_for TEXT,
    started_at TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_per_fire
    ON runs (job_id, scheduled_for) WHERE trigger IN ('schedule', 'catch-up');
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_id, started_at);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_running ON runs (status) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    anchor TEXT NOT NULL,
    version INTEGER NOT NULL
);
"""


def iso(instant: datetime) -> str:
    """A fixed-width UTC timestamp, so stored instants compare and sort as text."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class JobState:
    """What the daemon remembers of a job between restarts."""

    definition: str
    anchor: datetime
    last_fire: datetime | None


class DatabaseLockedError(PollerError):
    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        super().__init__(
            f"{path} is in use by another Poller daemon ({holder}); "
            "stop it first, or give this one its own settings.state_db"
        )


class HistoryStore:
    """One SQLite connection shared by the loop and the workers, serialised by a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._in_transaction = False
        self._lock_file: IO[str] | None = None
        self._pending: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._db = sqlite3.connect(
            self.path, timeout=10, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(DDL)
        self._db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )

    def acquire_daemon_lock(self) -> None:
        """Hold an exclusive lock for this process's life; raise if another daemon has it."""
        lock_path = self.path.with_name(self.path.name + ".lock")
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

    def close(self) -> None:
        """Write what save_later() holds, then close the database."""
        if self._writer is not None:
            self._pending.put(None)
            self._writer.join()
        with self._lock:
            self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()

    # --- runs -------------------------------------------------------------------------

    def claim(self, record: dict[str, Any]) -> bool:
        """Insert a new run; False when this (job, scheduled instant) fire already exists."""
        try:
            self._write("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _row(record))
        except sqlite3.IntegrityError:
            return False
        return True

    def save(self, record: dict[str, Any]) -> None:
        """Insert or replace a run record (its final state)."""
        self._write("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _row(record))

    def save_later(self, record: dict[str, Any]) -> None:
        """Queue a record for a writer thread that commits whatever has queued up at once.

        One commit per batch instead of one per run is what lets a busy daemon keep up; a
        crash loses only queued records, whose runs the next start marks interrupted.
        """
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_queued, name="history-writer", daemon=True
                )
                self._writer.start()
        self._pending.put(record)

    def flush(self) -> None:
        """Wait until every record given to save_later() is committed."""
        self._pending.join()

    def _write_queued(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < 1000:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            records = [record for record in batch if record is not None]
            try:
                with self.transaction():
                    for record in records:
                        self.save(record)
            except sqlite3.Error:
                log.exception("%d run record(s) could not be written", len(records))
            for _ in batch:
                self._pending.task_done()
            if len(records) < len(batch):
                return

    def get(self, run_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT run_id, version, record FROM runs WHERE run_id = ?", (run_id,))
        return _decode(rows[0]) if rows else None

    def recent(
        self, job_id: str | None = None, limit: int = 20, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Runs, newest first."""
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

    def mark_interrupted(self, reason: str, now: datetime) -> int:
        """Turn runs left `running` (by a crash or a stop) into `interrupted`."""
        rows = self._read("SELECT run_id, version, record FROM runs WHERE status = 'running'", ())
        for row in rows:
            record = _decode(row)
            if record.get("status") == "unreadable":
                continue
            record.update(status="interrupted", reason=reason, finished_at=now.isoformat())
            self.save(record)
        return len(rows)

    def prune(self, max_age_days: int, max_runs_per_job: int, now: datetime) -> int:
        """Delete finished runs older than the age limit, and beyond the newest N per job."""
        cutoff = iso(now - timedelta(days=max_age_days))
        with self._lock:
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
                    "ORDER BY started_at DESC, rowid DESC LIMIT -1 OFFSET ?)",
                    (job_id, max_runs_per_job),
                ).rowcount
        return int(deleted)

    def totals(self) -> dict[str, int]:
        """Run counts by status."""
        rows = self._read("SELECT status, COUNT(*) FROM runs GROUP BY status", ())
        return {str(status): int(count) for status, count in rows}

    # --- job state --------------------------------------------------------------------

    def job_states(self) -> dict[str, JobState]:
        """Each known job's definition, anchor and last handled fire.

        The last fire is the newest scheduled fire in the runs: every fire the daemon
        handles leaves a record (a run, or a skip) with its scheduled instant, so no
        separate write per fire is needed to know where to catch up from.
        """
        rows = self._read(
            "SELECT job_id, definition, anchor, (SELECT MAX(scheduled_for) FROM runs "
            "WHERE runs.job_id = jobs.job_id AND trigger IN ('schedule', 'catch-up')) "
            "FROM jobs",
            (),
        )
        return {
            job_id: JobState(definition, parse_iso(anchor), parse_iso(last) if last else None)
            for job_id, definition, anchor, last in rows
        }

    def save_job_states(self, states: list[tuple[str, str, datetime]]) -> None:
        """Remember jobs' definitions and the anchors their `every` fires count from.

        `states` holds (job id, definition, anchor) tuples; one statement writes them all.
        """
        stamps: dict[datetime, str] = {}  # a start or reload gives every new job one anchor
        rows = [
            (job_id, definition, stamps.get(anchor) or stamps.setdefault(anchor, iso(anchor)))
            for job_id, definition, anchor in states
        ]
        with self._lock:
            self._db.executemany(
                f"INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, {SCHEMA_VERSION})", rows
            )

    # --- plumbing ---------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make the writes inside one commit (nested uses join the outer one)."""
        with self._lock:
            if self._in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
            try:
                yield
            except BaseException:
                if self._db.in_transaction:  # some errors have already rolled it back
                    self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._in_transaction = False

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()


def _row(record: dict[str, Any]) -> tuple[Any, ...]:
    scheduled = record.get("scheduled_for")
    started = record.get("started_at") or scheduled
    return (
        record["run_id"],
        record["job_id"],
        record["trigger"],
        iso(datetime.fromisoformat(scheduled)) if scheduled else None,
        iso(datetime.fromisoformat(started)) if started else iso(datetime.now(UTC)),
        record["status"],
        SCHEMA_VERSION,
        json.dumps(record, separators=(",", ":"), default=str),
    )


def _decode(row: tuple[str, int, str]) -> dict[str, Any]:
    run_id, version, text = row
    problem = None
    if version > SCHEMA_VERSION:
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
