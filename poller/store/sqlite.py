"""The embedded store: the history file (WAL) and its claim journal, `<state_db>.fires`.

The history holds run records (SPEC §4 dicts as JSON with a version, never pickle) and job
states (grid, anchor); a row this code cannot read is reported, never deleted. The
journal (poller.store.journal) holds each job's last claimed fire and the claims whose
record is not written yet. One daemon per file (a lock file); readers open the history only.

How the promise holds across two files. A claim commits in the journal before its run
starts. The writer commits records in the history, then forgets their claims in the
journal. At start, and at a stop, `mark_interrupted` writes a record for every claim whose
run has none (a skipped fire's own record, else `interrupted`), then forgets the claims:
a crash between any two of these steps leaves claims whose records either exist (they are
only forgotten) or do not (they are written), so every claimed fire ends with exactly one
record. A claim is refused unless its fire is after its job's last one, and the runs table
holds one record per (job, fire), so no fire runs twice.

Durability. A commit survives a `kill -9` at any instant. Under the default
`synchronous=NORMAL` a power loss (or an OS crash) may undo the last commits before the
next checkpoint: an undone claim lets its fire run again after the restart, and a run
whose end was undone shows `interrupted`. With `settings.durability: "full"` every commit
waits for the disk (`synchronous=FULL`), which costs a flush per wake.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

from poller import __version__
from poller.errors import PollerError, StateFileError
from poller.filemodes import make_private, tighten
from poller.store import migrate
from poller.store.base import Claim, ClaimAnswer, JobState, StoreError, brief
from poller.store.journal import ClaimJournal
from poller.store.rows import (
    claim_row,
    decode,
    record_row,
    recovered_row,
    result_row,
)
from poller.store.writer import QueuedWrites, Recordable, RecordQueue
from poller.timeformat import column, parse, utc_text

SCHEMA_VERSION = migrate.SCHEMA_VERSION
# A run's later records change only its status and record (cheaper than a REPLACE, which
# deletes the row from every index and inserts it again).
SAVE_SQL = (
    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE "
    "SET status = excluded.status, version = excluded.version, record = excluded.record"
)
Durability = Literal["normal", "full"]
FIRE_TRIGGERS = ("schedule", "catch-up")


class DatabaseLockedError(PollerError):
    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        super().__init__(
            f"{path} is in use by another Poller daemon ({holder}); "
            "stop it first, or give this one its own settings.state_db"
        )


class SqliteStore(QueuedWrites):
    """One history connection shared by the writer thread, the workers and the loop's rare
    history writes, behind a lock (not SQLite's busy handler, which sleeps in steps of
    milliseconds); the daemon's claim journal beside it."""

    shared = False

    def __init__(
        self, path: str | Path, durability: Durability = "normal", *, read_only: bool = False
    ) -> None:
        """Open (or create) the history; `read_only` opens an existing file as it is, for
        the commands beside a daemon: no schema, no WAL switch, no change of its mode."""
        self.path = Path(path)
        self.durability = durability
        self._lock = threading.RLock()
        self._lock_file: IO[str] | None = None
        self._journal: ClaimJournal | None = None
        try:
            if read_only:
                self._db = sqlite3.connect(
                    f"{self.path.absolute().as_uri()}?mode=ro",
                    uri=True,
                    timeout=10,
                    check_same_thread=False,
                    isolation_level=None,
                )
                self.schema_version = migrate.readable_version(self._db)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                make_private(self.path)
                self._db = sqlite3.connect(
                    self.path, timeout=10, check_same_thread=False, isolation_level=None
                )
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={durability.upper()}")
                self.schema_version = migrate.prepare(self._db)
                tighten(self.path)
            self._db.execute("PRAGMA busy_timeout=10000")
        except (OSError, sqlite3.Error) as err:
            raise StateFileError(self.path, err) from None
        self._queue = RecordQueue(self._write_batch, name="history-writer")

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def acquire_daemon_lock(self) -> None:
        """Hold an exclusive lock for this process's life, then bring the schema up to date.

        Raises DatabaseLockedError when another daemon holds it, StateFileError when the
        file cannot be migrated (it is then left as it was).
        """
        lock_path = self.lock_path
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
        journal = ClaimJournal(self.path.with_name(self.path.name + ".fires"))
        if self.durability == "full":
            journal.set_durability("FULL")
        # The history's last fires go into the journal first (a new or lost journal, or a
        # version 1 history): no fire before them can be claimed again.
        if journal.is_empty() or self.schema_version < SCHEMA_VERSION:
            with self._lock:
                journal.seed(migrate.last_fires(self._db))
        if self.schema_version < SCHEMA_VERSION:
            with self._lock:
                migrate.upgrade(self._db, self.path, self.schema_version)
            self.schema_version = SCHEMA_VERSION
        self._journal = journal

    def daemons(self) -> list[dict[str, Any]]:
        """This process when it holds the lock; else the process the lock file names, if
        it still runs (read without locking, so a daemon starting now is never refused)."""
        if self._lock_file is not None:
            pid = os.getpid()
        else:
            try:
                words = self.lock_path.read_text(encoding="utf-8").split()
                pid = int(words[1]) if words[:1] == ["pid"] and len(words) == 2 else 0
                if pid <= 0:
                    return []
                os.kill(pid, 0)
            except (OSError, ValueError):
                return []
        return [
            {
                "host": socket.gethostname(),
                "pid": pid,
                "version": __version__ if self._lock_file is not None else None,
                "started_at": None,
                "last_heartbeat": None,
                "this": self._lock_file is not None,
                "alive": True,
            }
        ]

    def open_reader(self) -> SqliteStore:
        return SqliteStore(self.path, self.durability)

    def close(self) -> None:
        self._queue.close()
        with self._lock:
            self._db.close()
        if self._journal is not None:
            self._journal.close()
        if self._lock_file is not None:
            self._lock_file.close()

    # --- the hot path ----------------------------------------------------------------

    def claim(self, claims: Sequence[Claim]) -> list[ClaimAnswer]:
        """Fires go to the journal; a manual run's record (one daemon: it always has
        room) to the history."""
        manual = [claim for claim in claims if claim.scheduled_for is None]
        for claim in manual:
            self.save(claim.record)
        if len(manual) == len(claims):
            return ["claimed"] * len(claims)
        rows = [claim_row(claim) for claim in claims if claim.scheduled_for is not None]
        try:
            fired = iter(self.journal.claim(rows))
        except sqlite3.Error as err:
            raise StoreError(f"{self.journal.path}: claiming fires", err) from None
        return [
            "claimed" if claim.scheduled_for is None or next(fired) else "taken" for claim in claims
        ]

    @property
    def journal(self) -> ClaimJournal:
        """The claim journal; the daemon's alone (acquire_daemon_lock opens it)."""
        if self._journal is None:
            raise RuntimeError("only the daemon claims fires: call acquire_daemon_lock() first")
        return self._journal

    def save(self, record: Any) -> None:
        row = record_row(record) if isinstance(record, dict) else result_row(record)
        with self._writing("saving a run record"):
            self._db.execute(SAVE_SQL, row)

    def _write_batch(self, results: list[Recordable]) -> None:
        rows = [result_row(result) for result in results]  # before the lock is taken
        with self._writing("writing run records"):
            self._db.executemany(SAVE_SQL, rows)
        self._forget([row[0] for row in rows if row[2] in FIRE_TRIGGERS])

    # --- job state -------------------------------------------------------------------

    def job_states(self) -> dict[str, JobState]:
        last = {job_id: parse(fire) for job_id, fire in self.journal.last_fires().items()}
        states = {
            job_id: dataclasses.replace(state, last_fire=last.get(job_id))
            for job_id, state in self.job_anchors().items()
        }
        for job_id, fire in last.items():  # claimed, but never given a state
            states.setdefault(job_id, JobState(None, fire, fire))
        return states

    def job_anchors(self) -> dict[str, JobState]:
        rows = self._read("SELECT job_id, grid, anchor FROM jobs", ())
        return {job_id: JobState(grid, parse(anchor), None) for job_id, grid, anchor in rows}

    def save_job_states(self, states: dict[str, JobState]) -> dict[str, JobState]:
        stamps: dict[datetime, str] = {}  # a start or reload gives every new job one anchor
        rows = [
            (
                job_id,
                state.grid,
                stamps.get(state.anchor) or stamps.setdefault(state.anchor, column(state.anchor)),
            )
            for job_id, state in states.items()
        ]
        with self._writing("saving job states"):
            self._db.executemany(
                "INSERT INTO jobs (job_id, grid, anchor) VALUES (?1, ?2, ?3) "
                "ON CONFLICT (job_id) DO UPDATE SET grid = ?2, anchor = ?3 WHERE grid IS NOT ?2",
                rows,
            )
            stored = self._db.execute(
                "SELECT job_id, grid, anchor FROM jobs WHERE job_id IN "
                "(SELECT value FROM json_each(?))",
                (json.dumps(list(states)),),
            ).fetchall()
        return {job_id: JobState(grid, parse(anchor), None) for job_id, grid, anchor in stored}

    # --- monitoring --------------------------------------------------------------------

    def note(self, job_id: str, name: str) -> Any | None:
        if self.schema_version < 3:  # a read-only look at an older file: nothing noted yet
            return None
        rows = self._read("SELECT value FROM notes WHERE job_id = ? AND name = ?", (job_id, name))
        if not rows:
            return None
        try:
            return json.loads(rows[0][0])
        except ValueError:
            return None  # unreadable: the job starts anew (a new baseline, no failures)

    def save_note(self, job_id: str, name: str, value: Any) -> None:
        text = json.dumps(value, separators=(",", ":"), default=str)
        with self._writing(f"saving the {name} of job {job_id}"):
            self._db.execute(
                "INSERT INTO notes VALUES (?1, ?2, ?3) "
                "ON CONFLICT (job_id, name) DO UPDATE SET value = ?3",
                (job_id, name, text),
            )

    def drop_note(self, job_id: str, name: str) -> None:
        with self._writing(f"forgetting the {name} of job {job_id}"):
            self._db.execute("DELETE FROM notes WHERE job_id = ? AND name = ?", (job_id, name))

    # --- file listings ---------------------------------------------------------------

    def listing(self, scope: str) -> dict[str, str]:
        with self._lock:
            if not self._has_listings():
                return {}
        rows = self._read("SELECT path, version FROM listings WHERE scope = ?", (scope,))
        return {str(path): str(version) for path, version in rows}

    def save_listing(self, scope: str, versions: Mapping[str, str], now: datetime) -> None:
        with self._writing(f"saving the listing of {scope}"):
            migrate.run_ddl(self._db, migrate.LISTINGS_DDL)
            self._db.execute("DELETE FROM listings WHERE scope = ?", (scope,))
            self._db.executemany(
                "INSERT INTO listings VALUES (?, ?, ?)",
                ((scope, path, version) for path, version in versions.items()),
            )
            self._db.execute(
                "INSERT INTO listing_scopes VALUES (?1, ?2) "
                "ON CONFLICT (scope) DO UPDATE SET saved_at = ?2",
                (scope, column(now)),
            )

    def prune_listings(self, max_age_days: int, now: datetime) -> int:
        with self._lock:
            if not self._has_listings():
                return 0
        cutoff = column(now - timedelta(days=max_age_days))
        with self._writing("pruning old listings"):
            gone = [
                row[0]
                for row in self._db.execute(
                    "SELECT scope FROM listing_scopes WHERE saved_at < ?", (cutoff,)
                )
            ]
            for scope in gone:
                self._db.execute("DELETE FROM listings WHERE scope = ?", (scope,))
                self._db.execute("DELETE FROM listing_scopes WHERE scope = ?", (scope,))
        return len(gone)

    def _has_listings(self) -> bool:
        """Whether the file has listing tables yet (a worker adds them); under the lock."""
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'listing_scopes'"
        ).fetchone()
        return row is not None

    # --- reads -----------------------------------------------------------------------

    def get(self, run_id: str) -> dict[str, Any] | None:
        queued = self.queued(run_id)
        if queued is not None:
            return queued
        rows = self._read("SELECT run_id, version, record FROM runs WHERE run_id = ?", (run_id,))
        return decode(rows[0]) if rows else None

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
        return [decode(row) for row in rows]

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
            "* 86400000) AS INTEGER)) END, "
            "CASE WHEN json_valid(run.record) THEN json_extract(run.record, '$.dry_run') END "
            "FROM json_each(?1) AS job JOIN runs AS run ON run.rowid IN "
            "(SELECT rowid FROM runs WHERE job_id = job.value "
            "ORDER BY started_at DESC, rowid DESC LIMIT ?3) "
            "ORDER BY job.key, run.started_at DESC, run.rowid DESC",
            (json.dumps(job_ids), migrate.RECORD_VERSION, per_job),
        )
        found: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
        for job_id, run_id, status, trigger, started_at, duration_ms, dry_run in rows:
            found[job_id].append(brief(run_id, status, trigger, started_at, duration_ms, dry_run))
        return found

    def totals(self) -> dict[str, int]:
        rows = self._read("SELECT status, COUNT(*) FROM runs GROUP BY status", ())
        return {str(status): int(count) for status, count in rows}

    # --- housekeeping ----------------------------------------------------------------

    def mark_interrupted(self, reason: str, now: datetime) -> int:
        pending = self._journal.pending() if self._journal is not None else []
        rows = self._read("SELECT run_id, version, record FROM runs WHERE status = 'running'", ())
        ended = {"status": "interrupted", "reason": reason, "finished_at": utc_text(now)}
        updated = [
            record_row({**record, **ended})
            for record in map(decode, rows)
            if record.get("status") != "unreadable"
        ]
        recovered = [recovered_row(claim, ended) for claim in pending]
        with self._writing("recording interrupted runs"):
            self._db.executemany(SAVE_SQL, updated)
            # A claim whose record was written before the crash keeps that record.
            recovered = [row for row in recovered if not self._exists(row[0])]
            self._db.executemany(SAVE_SQL, recovered)
        self._forget([claim[0] for claim in pending])
        return len(updated) + len([row for row in recovered if row[5] == "interrupted"])

    def _forget(self, run_ids: list[str]) -> None:
        """Drop the journal's claims of runs whose records are in the history now."""
        if run_ids and self._journal is not None:
            try:
                self._journal.done(run_ids)
            except sqlite3.Error as err:
                raise StoreError(f"{self._journal.path}: forgetting written claims", err) from None

    def _exists(self, run_id: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            is not None
        )

    def prune(self, max_age_days: int, max_runs_per_job: int, now: datetime) -> int:
        cutoff = column(now - timedelta(days=max_age_days))
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
