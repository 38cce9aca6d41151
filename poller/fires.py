"""Each job's last handled fire, in a small SQLite file of its own: what makes a fire run once.

The daemon's loop claims every scheduled fire here before handing it off. The file sits
beside the run history but apart from it, so the loop's one-row commits never wait for the
history writer's batches, and their checkpoints rewrite a few pages, not the runs table.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from poller.errors import StateFileError
from poller.filemodes import make_private, tighten

CLAIM_SQL = (
    "INSERT INTO fires VALUES (?1, ?2) ON CONFLICT (job_id) "
    "DO UPDATE SET last_fire = excluded.last_fire WHERE last_fire < excluded.last_fire"
)


def ledger_path(history_path: Path) -> Path:
    """Where the ledger of a history database lives: `poller.db` -> `poller.db.fires`."""
    return history_path.with_name(history_path.name + ".fires")


class FireLedger:
    """job id -> last fire handled (claimed), as fixed-width UTC ISO text that sorts.

    Only the daemon opens it, and holds it exclusively (SQLite's exclusive locking mode:
    no shared-memory index, no file locks per commit), as it holds its history.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._claims: int | None = None  # claims in the current transaction() block
        try:
            make_private(path)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS fires "
                "(job_id TEXT PRIMARY KEY, last_fire TEXT NOT NULL)"
            )
            tighten(path)
        except (OSError, sqlite3.Error) as err:
            raise StateFileError(path, err) from None

    def is_empty(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM fires LIMIT 1").fetchone() is None

    def seed(self, rows: list[tuple[str, str]]) -> None:
        """Take (job id, last fire ISO text) pairs, as a new ledger's starting point."""
        with self._lock:
            self._db.executemany(CLAIM_SQL, rows)

    def claim(self, job_id: str, scheduled_for: str) -> bool:
        """Mark a fire as handled; False when it (or a later one) already was."""
        with self._lock:
            if self._claims is not None:
                self._claims += 1
                if self._claims == 2:
                    self._db.execute("BEGIN IMMEDIATE")
            return bool(self._db.execute(CLAIM_SQL, (job_id, scheduled_for)).rowcount)

    def last_fires(self) -> dict[str, str]:
        """Every job's last handled fire, as stored (ISO text, UTC)."""
        with self._lock:
            return dict(self._db.execute("SELECT job_id, last_fire FROM fires").fetchall())

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Let the claims inside share a commit; the loop takes one per wake.

        The first claim commits by itself, since most wakes have one fire: one statement,
        not three, is one wait for the GIL fewer on the loop. Claims from the second on
        share one commit, also when the block raises (a made claim is a handed-off fire).
        """
        with self._lock:
            if self._claims is not None:
                yield
                return
            self._claims = 0
            try:
                yield
            finally:
                self._claims = None
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
