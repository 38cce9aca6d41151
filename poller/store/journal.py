"""The claim journal, `<state_db>.fires`: each job's last claimed fire, and every claim whose
run record is not written yet. The loop's one commit per wake goes here.

Why a file of its own: SQLite lets one transaction write a file at a time, so claims in the
history file would wait behind the record writer's batches (measured: fire lateness p99 from
2.5 to 7.9 ms in bench_scheduler's (a)); here a claim is one small statement that never
waits for a batch. Only the daemon opens it. How the two files keep the promise is said in
poller.store.sqlite.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from poller.errors import StateFileError
from poller.filemodes import make_private, tighten
from poller.store.migrate import run_ddl

JOURNAL_VERSION = 2
"""PRAGMA user_version of the journal: 0 was version 1's ledger (fires only)."""
DDL = """
CREATE TABLE IF NOT EXISTS fires (job_id TEXT PRIMARY KEY, last_fire TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    run_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    scheduled_for TEXT NOT NULL,
    started_at TEXT NOT NULL,
    record TEXT
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS claims_move_last_fire AFTER INSERT ON claims BEGIN
    INSERT INTO fires VALUES (NEW.job_id, NEW.scheduled_for)
    ON CONFLICT (job_id) DO UPDATE SET last_fire = excluded.last_fire
    WHERE last_fire < excluded.last_fire;
END;
"""
# One statement: the claim goes in only when its fire is after the job's last one, and the
# trigger above moves the last fire forward. A wake of one fire (the usual) is then one
# implicit transaction, the cheapest commit SQLite has.
CLAIM_SQL = (
    "INSERT OR IGNORE INTO claims SELECT ?1, ?2, ?3, ?4, ?5, ?6 "
    "WHERE NOT EXISTS (SELECT 1 FROM fires WHERE job_id = ?2 AND last_fire >= ?4)"
)
SEED_SQL = (
    "INSERT INTO fires VALUES (?1, ?2) ON CONFLICT (job_id) DO UPDATE "
    "SET last_fire = excluded.last_fire WHERE last_fire < excluded.last_fire"
)
ClaimRow = tuple[str, str, str, str, str, str | None]
"""run id, job id, trigger, scheduled_for, started_at (ISO, UTC), a skipped fire's record JSON."""


class ClaimJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            make_private(path)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            # Held exclusively, as only the daemon holding the store's lock opens it: no
            # shared-memory index and no file locks per commit (a quarter of a claim's cost).
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if self._db.execute("PRAGMA user_version").fetchone()[0] > JOURNAL_VERSION:
                raise StateFileError(
                    path,
                    ValueError("it was written by a newer Poller"),
                    advice="Run the newer Poller, or point settings.state_db elsewhere.",
                )
            self._db.execute("BEGIN IMMEDIATE")
            run_ddl(self._db, DDL)
            self._db.execute(f"PRAGMA user_version = {JOURNAL_VERSION}")
            self._db.execute("COMMIT")
            tighten(path)
        except (OSError, sqlite3.Error) as err:
            raise StateFileError(path, err) from None

    def set_durability(self, synchronous: str) -> None:
        with self._lock:
            self._db.execute(f"PRAGMA synchronous={synchronous}")

    def claim(self, rows: Sequence[ClaimRow]) -> list[bool]:
        """Claim fires in one transaction; False for a fire not after its job's last one.

        Raises sqlite3.Error with nothing kept.
        """
        if len(rows) == 1:  # one statement is its own transaction
            with self._lock:
                return [bool(self._db.execute(CLAIM_SQL, rows[0]).rowcount)]
        with self._transaction():
            return [bool(self._db.execute(CLAIM_SQL, row).rowcount) for row in rows]

    def done(self, run_ids: Sequence[str]) -> None:
        """Forget the claims of runs whose records are written."""
        with self._transaction():
            self._db.executemany("DELETE FROM claims WHERE run_id = ?", [(r,) for r in run_ids])

    def pending(self) -> list[ClaimRow]:
        """Claims whose records are not known to be written (after a crash, or a stop)."""
        with self._lock:
            return self._db.execute(
                "SELECT run_id, job_id, trigger, scheduled_for, started_at, record FROM claims"
            ).fetchall()

    def last_fires(self) -> dict[str, str]:
        """Every job's last claimed fire (ISO text, UTC)."""
        with self._lock:
            return dict(self._db.execute("SELECT job_id, last_fire FROM fires").fetchall())

    def seed(self, rows: Sequence[tuple[str, str]]) -> None:
        """Move jobs' last fires forward to (job id, fire) pairs (from the history)."""
        with self._transaction():
            self._db.executemany(SEED_SQL, rows)

    def is_empty(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM fires LIMIT 1").fetchone() is None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """The writes inside commit together, or not at all (the error is raised)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except sqlite3.Error:
                if self._db.in_transaction:  # some errors have already rolled it back
                    self._db.execute("ROLLBACK")
                raise
