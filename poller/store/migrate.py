"""The SQLite store's schema, and bringing a file written by an older Poller up to date.

Version 1 (Poller before the store package) hashed a whole job into `jobs.definition`;
version 2 keeps the fingerprint of its fire grid (`jobs.grid`) instead, and each job's last
claimed fire lives in the claim journal (poller.store.journal), as version 1's `.fires`
ledger already held it. Version 3 adds `notes`: what a job's monitoring remembers
(its change-detection baseline, its alert state). The listing tables (what a worker saw
of a file source) are only ever added, by whichever process first needs them, so they
change no version. A file this code cannot read is reported and left as it is.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from poller.errors import StateFileError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
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
CREATE TABLE IF NOT EXISTS notes (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;
"""
LISTINGS_DDL = """
CREATE TABLE IF NOT EXISTS listing_scopes (scope TEXT PRIMARY KEY, saved_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS listings (
    scope TEXT NOT NULL,
    path TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (scope, path)
) WITHOUT ROWID;
"""
JOBS_DDL = """
CREATE TABLE {name} (
    job_id TEXT PRIMARY KEY,
    grid TEXT,
    anchor TEXT NOT NULL
) WITHOUT ROWID
"""


def prepare(db: sqlite3.Connection) -> int:
    """Give a new file the current schema; return the file's schema version.

    Raises sqlite3.Error when the file is not a database, StateFileError when a newer
    Poller wrote it.
    """
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables:
        db.execute("BEGIN IMMEDIATE")
        run_ddl(db, DDL + JOBS_DDL.format(name="IF NOT EXISTS jobs") + ";")
        version = 1 if "jobs" in tables else SCHEMA_VERSION  # jobs alone: a version 1 file
        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
        db.execute("COMMIT")
        return version
    return readable_version(db)


def readable_version(db: sqlite3.Connection) -> int:
    """The schema version of a Poller file, for reading it as it is.

    Raises sqlite3.Error when the file is not a database, StateFileError when it is not
    Poller's (an empty file, another program's database) or a newer Poller wrote it.
    """
    path = Path(db.execute("PRAGMA database_list").fetchone()[2])
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "runs" not in tables and "jobs" not in tables:
        raise StateFileError(
            path,
            ValueError("it holds no Poller history"),
            advice="It is left as it is: point settings.state_db at the daemon's database.",
        )
    row = (
        db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if ("meta" in tables)
        else None
    )
    version = int(row[0]) if row else 1
    if version > SCHEMA_VERSION:
        raise StateFileError(
            path,
            ValueError(f"it was written by a newer Poller (schema version {version})"),
            advice=f"This Poller reads schema versions up to {SCHEMA_VERSION}; run the "
            "newer Poller, or point settings.state_db elsewhere.",
        )
    return version


def last_fires(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """(job id, latest fire) pairs a claim journal starts from: each job's latest scheduled
    run, and the `last_fire` column where an even older Poller kept it."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    rows = db.execute(
        "SELECT job_id, MAX(scheduled_for) FROM runs "
        "WHERE trigger IN ('schedule', 'catch-up') GROUP BY job_id"
    ).fetchall()
    if "last_fire" in columns:
        rows += db.execute("SELECT job_id, last_fire FROM jobs WHERE last_fire IS NOT NULL")
    return [(str(job_id), str(fire)) for job_id, fire in rows]


def upgrade(db: sqlite3.Connection, path: Path, version: int) -> None:
    """Bring an older file to the current schema in one transaction (the daemon only; a
    version 1 file's last fires are in the claim journal by now)."""
    try:
        db.execute("BEGIN IMMEDIATE")
        run_ddl(db, DDL)  # the tables and indexes a newer version added
        if version < 2:
            run_ddl(db, JOBS_DDL.format(name="jobs_v2") + ";")
            # The grid that set each anchor is not known (version 1 hashed the whole job):
            # NULL keeps the anchor, and the next start records the grid it runs on.
            db.execute("INSERT INTO jobs_v2 SELECT job_id, NULL, anchor FROM jobs")
            db.execute("DROP TABLE jobs")
            db.execute("ALTER TABLE jobs_v2 RENAME TO jobs")
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        db.execute("COMMIT")
    except sqlite3.Error as err:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise StateFileError(path, err) from None
    log.info("%s: migrated from schema version %d to %d", path, version, SCHEMA_VERSION)


def run_ddl(db: sqlite3.Connection, script: str) -> None:
    """Run DDL statements one by one: executescript() would commit the open transaction."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
