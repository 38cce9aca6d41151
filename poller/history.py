"""The run history and per-job schedule state, in SQLite (WAL): every fire lands here.

Records are SPEC §4 run dicts stored as JSON with a schema version (never pickle). A row
this code cannot read is reported, never deleted. One daemon per database (a lock file).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from poller.errors import PollerError, StateFileError
from poller.filemodes import make_private, tighten
from poller.fires import FireLedger, ledger_path
from poller.recordqueue import Recordable, RecordQueue

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
SAVE_SQL = "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
LOST_FIRE_REASON = "the daemon stopped before the run's record was written"


def iso(instant: datetime) -> str:
    """A fixed-width UTC timestamp, so stored instants compare and sort as text."""
    return instant.astimezone(UTC).isoformat(timespec="microseconds")


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
    """One SQLite connection shared by the loop and the workers, serialised by a lock.

    A scheduled fire is claimed before it runs by moving its job's last fire forward in the
    fire ledger (poller.fires), in the loop's one commit per wake. Its run records go
    through save_later(): a writer thread commits them in batches, and a run that finished
    by then is written once, in its final state. After a crash, the next start marks what
    was left `running` interrupted, and gives a claimed fire whose record never reached the
    database an interrupted record of its own (mark_lost_fires), so nothing goes unrecorded.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._in_transaction = False
        self._lock_file: IO[str] | None = None
        self._ledger: FireLedger | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            make_private(self.path)
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
            tighten(self.path)
        except (OSError, sqlite3.Error) as err:
            raise StateFileError(self.path, err) from None
        self._queue = RecordQueue(self._write_batch, name="history-writer")

    def acquire_daemon_lock(self) -> None:
        """Hold an exclusive lock for this process's life; raise if another daemon has it."""
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

    def close(self) -> None:
        """Write what save_later() holds, then close the database."""
        self._queue.close()
        with self._lock:
            self._db.close()
        if self._ledger is not None:
            self._ledger.close()
        if self._lock_file is not None:
            self._lock_file.close()

    # --- runs -------------------------------------------------------------------------

    def claim_fire(self, job_id: str, scheduled_for: datetime) -> bool:
        """Mark a scheduled fire as handled; False when it (or a later one) already was."""
        return self.fires().claim(job_id, iso(scheduled_for))

    def fires(self) -> FireLedger:
        """The ledger of handled fires beside this database; the daemon's alone.

        A new (or lost) ledger starts from the history: each job's latest scheduled run,
        and its `last_fire` column where an older Poller kept it there.
        """
        if self._ledger is None:
            ledger = FireLedger(ledger_path(self.path))
            if ledger.is_empty():
                columns = {row[1] for row in self._read("PRAGMA table_info(jobs)", ())}
                from_jobs = "SELECT job_id, last_fire FROM jobs WHERE last_fire IS NOT NULL"
                ledger.seed(
                    self._read(
                        "SELECT job_id, MAX(scheduled_for) FROM runs "
                        "WHERE trigger IN ('schedule', 'catch-up') GROUP BY job_id",
                        (),
                    )
                    + (self._read(from_jobs, ()) if "last_fire" in columns else [])
                )
            self._ledger = ledger
        return self._ledger

    def save(self, record: dict[str, Any]) -> None:
        """Insert or replace a run record (its final state)."""
        self._write(SAVE_SQL, _row(record))

    def save_later(self, result: Recordable) -> None:
        """Queue a run's record (a newer one of the same run replaces it) for the writer.

        The writer thread waits WRITE_DELAY_SECONDS for more, then commits the batch at
        once (poller.recordqueue). get() sees a queued record at once; recent() and
        totals() when it is written.
        """
        self._queue.add(result)

    def flush(self) -> None:
        """Wait until every record given to save_later() is committed."""
        self._queue.flush()

    def queued(self, run_id: str) -> dict[str, Any] | None:
        """A run's newest record while it waits for the writer, else None."""
        result = self._queue.queued(run_id)
        return None if result is None else result.to_dict()

    def _write_batch(self, results: list[Recordable]) -> None:
        rows = [_result_row(result) for result in results]  # before the lock is taken
        with self.transaction():
            self._db.executemany(SAVE_SQL, rows)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """A run's record: its newest queued one, else the one in the database."""
        queued = self.queued(run_id)
        if queued is not None:
            return queued
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

    def briefs(self, job_ids: list[str], per_job: int) -> dict[str, list[dict[str, Any]]]:
        """The newest `per_job` runs of each job, newest first, in brief.

        Each is run_id, status, trigger, started_at and duration_ms (None while running),
        read in one query that takes `per_job` index entries of each job and decodes no
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
            (json.dumps(job_ids), SCHEMA_VERSION, per_job),
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

    def mark_lost_fires(self, now: datetime) -> int:
        """Record each job's last claimed fire that has no run record (a crash came first)."""
        rows = self._read(
            "SELECT fire.key, fire.value FROM json_each(?) AS fire WHERE NOT EXISTS "
            "(SELECT 1 FROM runs WHERE runs.job_id = fire.key "
            "AND runs.scheduled_for = fire.value AND trigger IN ('schedule', 'catch-up'))",
            (json.dumps(self.fires().last_fires()),),
        )
        for job_id, last_fire in rows:
            fire = parse_iso(last_fire).isoformat()
            self.save(
                {
                    "run_id": f"lost-{job_id}-{fire}",
                    "job_id": job_id,
                    "trigger": "schedule",
                    "scheduled_for": fire,
                    "started_at": fire,
                    "finished_at": now.isoformat(),
                    "status": "interrupted",
                    "reason": LOST_FIRE_REASON,
                    "steps": [],
                    "output": None,
                }
            )
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
        """Each known job's definition, anchor and last handled (claimed) fire."""
        rows = self._read("SELECT job_id, definition, anchor FROM jobs", ())
        last = self.fires().last_fires()
        return {
            job_id: JobState(
                definition,
                parse_iso(anchor),
                parse_iso(last[job_id]) if job_id in last else None,
            )
            for job_id, definition, anchor in rows
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
                "INSERT INTO jobs (job_id, definition, anchor, version) VALUES (?1, ?2, ?3, ?4) "
                "ON CONFLICT (job_id) DO UPDATE SET definition = ?2, anchor = ?3, version = ?4",
                [(*row, SCHEMA_VERSION) for row in rows],
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


def _result_row(result: Recordable) -> tuple[Any, ...]:
    return _columns(result.to_dict(), result.scheduled_for, result.started_at)


def _row(record: dict[str, Any]) -> tuple[Any, ...]:
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
