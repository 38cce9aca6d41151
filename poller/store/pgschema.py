"""The PostgreSQL store's schema, its migrations, and the claim function of its hot path.

Every table is named `poller_*`, so the database may hold other programs' tables. The
schema version lives in `poller_meta`; a daemon creates or upgrades the schema under a
transaction-level advisory lock, so daemons that start together do not race. A database
whose schema this code cannot read (a newer Poller's, or `poller_*` tables without their
version) is reported and left as it is.

Instants are `timestamptz`; each run's SPEC §4 record is kept as the JSON text it was
written as (key order included), with the columns that queries need beside it.
"""

from __future__ import annotations

import logging

import psycopg

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MIGRATION_LOCK = 0x706F6C6C6572  # "poller": the advisory lock key of schema changes
TABLES = (
    "poller_meta",
    "poller_runs",
    "poller_jobs",
    "poller_notes",
    "poller_listing_scopes",
    "poller_listings",
    "poller_daemons",
)

DDL = """
CREATE TABLE poller_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE poller_runs (
    run_id text PRIMARY KEY,
    job_id text NOT NULL,
    trigger text NOT NULL,
    scheduled_for timestamptz,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    status text NOT NULL,
    dry_run boolean NOT NULL,
    version integer NOT NULL,
    record text NOT NULL,
    daemon_id text,
    seq bigint GENERATED ALWAYS AS IDENTITY
);
CREATE UNIQUE INDEX poller_runs_one_per_fire
    ON poller_runs (job_id, scheduled_for) WHERE trigger IN ('schedule', 'catch-up');
CREATE INDEX poller_runs_by_job ON poller_runs (job_id, started_at);
CREATE INDEX poller_runs_by_time ON poller_runs (started_at);
CREATE INDEX poller_runs_running ON poller_runs (job_id) WHERE status = 'running';
CREATE TABLE poller_jobs (
    job_id text PRIMARY KEY,
    grid text,
    anchor timestamptz NOT NULL,
    last_fire timestamptz
);
CREATE TABLE poller_notes (
    job_id text NOT NULL,
    name text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (job_id, name)
);
CREATE TABLE poller_listing_scopes (scope text PRIMARY KEY, saved_at timestamptz NOT NULL);
CREATE TABLE poller_listings (
    scope text NOT NULL REFERENCES poller_listing_scopes ON DELETE CASCADE,
    path text NOT NULL,
    version text NOT NULL,
    PRIMARY KEY (scope, path)
);
CREATE TABLE poller_daemons (
    daemon_id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    version text NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);
"""

CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION poller_claim(
    daemon text, run_ids text[], job_ids text[], triggers text[], fires timestamptz[],
    starts timestamptz[], finishes timestamptz[], statuses text[], dry_runs boolean[],
    records text[], rooms integer[], full_records text[], record_version integer
) RETURNS text[] LANGUAGE plpgsql AS $$
-- Each claim, in order: 'claimed' (its record is written), 'taken' (that fire, or a later
-- one of its job, was claimed before) or 'full' (the job's runs on other daemons leave no
-- room: the fire's skipped record, full_records[i], is written instead, if it has one).
DECLARE
    answers text[] := '{}';
    c record;
    others integer;
BEGIN
    FOR c IN SELECT * FROM unnest(
        run_ids, job_ids, triggers, fires, starts, finishes, statuses, dry_runs, records,
        rooms, full_records
    ) AS t(run_id, job_id, trigger, fire, started, finished, status, dry_run, record, room,
           full_record)
    LOOP
        IF c.fire IS NOT NULL THEN
            -- Only a fire after the job's last one; the row lock this takes makes the
            -- claims of one job, from any daemon, wait for each other.
            INSERT INTO poller_jobs AS j VALUES (c.job_id, NULL, c.fire, c.fire)
            ON CONFLICT (job_id) DO UPDATE SET last_fire = excluded.last_fire
            WHERE j.last_fire IS NULL OR j.last_fire < excluded.last_fire;
            IF NOT FOUND THEN
                answers := answers || 'taken'::text;
                CONTINUE;
            END IF;
        END IF;
        IF c.room IS NOT NULL THEN
            -- Counting and starting are one step per job across daemons.
            PERFORM pg_advisory_xact_lock(hashtext('poller_job:' || c.job_id));
            SELECT count(*) INTO others FROM poller_runs
            WHERE job_id = c.job_id AND status = 'running' AND daemon_id IS DISTINCT FROM daemon;
            IF others > c.room AND c.full_record IS NULL THEN  -- a manual run: none
                answers := answers || 'full'::text;
                CONTINUE;
            ELSIF others > c.room THEN
                INSERT INTO poller_runs VALUES (
                    c.run_id, c.job_id, c.trigger, c.fire, c.started, c.started, 'skipped',
                    c.dry_run, record_version, c.full_record, daemon
                ) ON CONFLICT DO NOTHING;
                answers := answers || 'full'::text;
                CONTINUE;
            END IF;
        END IF;
        INSERT INTO poller_runs VALUES (
            c.run_id, c.job_id, c.trigger, c.fire, c.started, c.finished, c.status,
            c.dry_run, record_version, c.record, daemon
        ) ON CONFLICT DO NOTHING;
        answers := answers || (CASE WHEN FOUND THEN 'claimed' ELSE 'taken' END);
    END LOOP;
    RETURN answers;
END $$;
"""


class SchemaError(Exception):
    """The database's Poller schema cannot be used by this code; it is left as it is."""


def prepare(conn: psycopg.Connection[tuple[object, ...]], *, create: bool) -> int:
    """The database's schema version, after creating the schema when it has none and
    `create` (a daemon or worker; never a command that only reads).

    Raises SchemaError for a schema this code cannot read, psycopg.Error when the
    database cannot be reached.
    """
    version = readable_version(conn)
    if version is not None or not create:
        return version or 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        version = readable_version(conn)  # another daemon may have made it meanwhile
        if version is None:
            for statement in DDL.split(";"):
                if statement.strip():
                    conn.execute(statement.encode())
            conn.execute(CLAIM_FUNCTION.encode())
            conn.execute(
                "INSERT INTO poller_meta VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),)
            )
            log.info("created Poller's tables (schema version %d)", SCHEMA_VERSION)
            version = SCHEMA_VERSION
    return version


def readable_version(conn: psycopg.Connection[tuple[object, ...]]) -> int | None:
    """The schema version, or None for a database without Poller's tables.

    Raises SchemaError for a version newer than this code's, or `poller_*` tables that
    have no version (not made by Poller, or a creation that never finished).
    """
    found = {
        str(row[0])
        for row in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
            (list(TABLES),),
        )
    }
    if not found:
        return None
    if "poller_meta" not in found:
        raise SchemaError(
            f"it has tables named {', '.join(sorted(found))} but no poller_meta: "
            "they were not made by Poller. They are left as they are: give Poller a "
            "database (or a schema) of its own."
        )
    row = conn.execute("SELECT value FROM poller_meta WHERE key = 'schema_version'").fetchone()
    version = int(str(row[0])) if row else 0
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"it was written by a newer Poller (schema version {version}). This Poller "
            f"reads schema versions up to {SCHEMA_VERSION}; run the newer Poller on every "
            "daemon, or point settings.state_db elsewhere."
        )
    if version < 1:
        raise SchemaError(
            "its poller_meta holds no schema version: the schema was not made by Poller, "
            "or its creation never finished. It is left as it is."
        )
    return version
