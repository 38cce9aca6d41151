"""The SQLite store's schema, and bringing a file written by an older Poller up to date.

Version 1 (Poller before the store package) kept each job's last claimed fire in a
second file, `<state_db>.fires`; version 2 keeps it in the jobs table beside the anchor,
so a claim and its record commit together. A file this code cannot read is reported and
left as it is: nothing is changed before every part of it has been read.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

from poller.errors import StateFileError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
RECORD_VERSION = 1
"""The version of the run record JSON (SPEC §4) in runs.version; newer rows are reported."""

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
"""
JOBS_DDL = """
CREATE TABLE {name} (
    job_id TEXT PRIMARY KEY,
    grid TEXT,
    anchor TEXT NOT NULL,
    last_fire TEXT
)
"""


def prepare(db: sqlite3.Connection) -> int:
    """Give a new file the current schema; return the file's schema version.

    Raises sqlite3.Error when the file is not a database, StateFileError when a newer
    Poller wrote it.
    """
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables:
        db.execute("BEGIN IMMEDIATE")
        _create(db, DDL + JOBS_DDL.format(name="IF NOT EXISTS jobs"))
        version = 1 if "jobs" in tables else SCHEMA_VERSION  # jobs alone: a version 1 file
        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
        db.execute("COMMIT")
        return version
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 1
    if version > SCHEMA_VERSION:
        path = Path(db.execute("PRAGMA database_list").fetchone()[2])
        raise StateFileError(
            path,
            ValueError(f"it was written by a newer Poller (schema version {version})"),
            advice=f"This Poller reads schema versions up to {SCHEMA_VERSION}; run the "
            "newer Poller, or point settings.state_db elsewhere.",
        )
    return version


def upgrade(db: sqlite3.Connection, path: Path, version: int) -> None:
    """Bring a version 1 file to the current schema in one transaction (the daemon only)."""
    ledger = path.with_name(path.name + ".fires")
    claimed = _read_ledger(ledger) if ledger.exists() else {}
    try:
        db.execute("BEGIN IMMEDIATE")
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        last = "last_fire" if "last_fire" in columns else "NULL"
        _create(db, DDL)
        db.execute(JOBS_DDL.format(name="jobs_v2"))
        # The grid that set each anchor is not known (version 1 hashed the whole job):
        # NULL keeps the anchor, and the next start records the grid it runs on.
        db.execute(f"INSERT INTO jobs_v2 SELECT job_id, NULL, anchor, {last} FROM jobs")
        db.execute("DROP TABLE jobs")
        db.execute("ALTER TABLE jobs_v2 RENAME TO jobs")
        fires = db.execute(
            "SELECT job_id, MAX(scheduled_for) FROM runs "
            "WHERE trigger IN ('schedule', 'catch-up') GROUP BY job_id"
        ).fetchall()
        for job_id, fire in [*fires, *claimed.items()]:
            db.execute(
                "INSERT INTO jobs VALUES (?1, NULL, ?2, ?2) ON CONFLICT (job_id) DO UPDATE "
                "SET last_fire = ?2 WHERE last_fire IS NULL OR last_fire < ?2",
                (job_id, fire),
            )
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        db.execute("COMMIT")
    except sqlite3.Error as err:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise StateFileError(path, err) from None
    for leftover in (ledger, *(ledger.with_name(ledger.name + end) for end in ("-wal", "-shm"))):
        leftover.unlink(missing_ok=True)
    log.info(
        "%s: migrated from schema version %d to %d%s",
        path,
        version,
        SCHEMA_VERSION,
        f" (the claims of {ledger.name} are now inside it)" if claimed else "",
    )


def _create(db: sqlite3.Connection, script: str) -> None:
    """Run DDL statements one by one: executescript() would commit the open transaction."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _read_ledger(ledger: Path) -> dict[str, str]:
    """job id -> last claimed fire, from a version 1 fire ledger; raises StateFileError."""
    try:
        # Opened as the old daemon did (a -wal left by a kill -9 holds its newest claims).
        with closing(sqlite3.connect(ledger)) as db:
            return dict(db.execute("SELECT job_id, last_fire FROM fires").fetchall())
    except sqlite3.Error as err:
        raise StateFileError(ledger, err) from None
