"""The shared store: one PostgreSQL database behind several daemons (SPEC §11).

What each guarantee rests on:
- *Every fire once.* A claim is one call of `poller_claim` (poller.store.pgschema): it moves
  the job's last fire forward only past it (the job's row lock makes two daemons' claims of
  one job wait for each other) and inserts the fire's first record, which a unique index on
  (job, fire) admits once. A claim commits before its run starts.
- *max_instances across daemons.* The claim counts the job's `running` records of other
  daemons under a per-job advisory lock; this daemon's own runs it counts itself (its
  executor). A run's end reaches the table with the record writer's next batch (tens of
  milliseconds), so for that long a finished run still counts as running elsewhere.
- *A daemon dies.* Each daemon heartbeats its row in `poller_daemons` every third of
  `settings.daemon_lease_seconds`, by the database's clock (machines' clocks may differ).
  Any daemon that finds another silent for the lease marks that one's `running` records
  `interrupted` and deletes its row. A claimed fire's record is written with its claim,
  so a fire claimed but never started is among them: nothing is silently lost.
- *Anchors.* The first daemon to save a job's fire grid sets its anchor; the others read it
  (save_job_states), so all compute the same fires.

Run records are written by a queue (poller.store.writer), as in SQLite. Durability is
the server's: a commit is on its disk (or its standby's) as its settings say.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from poller import __version__
from poller.errors import StoreUnavailableError
from poller.redaction import mask_text, mask_url
from poller.store import pgschema
from poller.store.base import Claim, ClaimAnswer, JobState, StoreError, brief
from poller.store.migrate import RECORD_VERSION
from poller.store.rows import decode, to_json
from poller.store.writer import QueuedWrites, Recordable, RecordQueue
from poller.timeformat import column, parse, utc_text

log = logging.getLogger(__name__)

POOL_SIZE = 4
"""Connections per store: the loop's claims, the record writer, the heartbeat, one spare."""
RUN_COLUMNS = (
    "run_id, job_id, trigger, scheduled_for, started_at, finished_at, status, dry_run, "
    "version, record, daemon_id"
)
SAVE_SQL = (
    f"INSERT INTO poller_runs ({RUN_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (run_id) DO UPDATE SET finished_at = excluded.finished_at, "
    "status = excluded.status, dry_run = excluded.dry_run, version = excluded.version, "
    "record = excluded.record"
)
CLAIM_SQL = "SELECT poller_claim(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
CONNECTION: dict[str, str | int] = {
    "options": "-c TimeZone=UTC",
    "connect_timeout": 5,
    "tcp_user_timeout": 10_000,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
"""How every connection is made: instants come back in UTC, as the records say them; a
database that stops answering (a partition, not only a refusal) fails a call within
about 10 s instead of the kernel's minutes."""
WAIT_SECONDS = 5
"""How long a call waits for a pooled connection while the database cannot be reached:
the loop then retries its claims at its next wake (as on a full disk)."""
LIVE_DAEMONS = "SELECT daemon_id FROM poller_daemons WHERE heartbeat_at > now() - %s"


class PostgresStore(QueuedWrites):
    """A pool of connections to one database, shared by the loop, the writer and the API."""

    shared = True

    def __init__(self, url: str, *, read_only: bool = False, lease_seconds: float = 30.0) -> None:
        """Connect, and (unless `read_only`) create or upgrade the schema.

        Raises StoreUnavailableError, naming the database without its password.
        """
        self.url = url
        self.where = mask_url(url)
        self.lease = timedelta(seconds=lease_seconds)
        self.daemon_id: str | None = None
        self._stopping = threading.Event()
        self._heartbeat: threading.Thread | None = None
        try:
            # One plain connection first: it says why it fails (the pool would only time out).
            with psycopg.connect(url, **CONNECTION) as conn:  # type: ignore[arg-type]
                self.schema_version = pgschema.prepare(conn, create=not read_only)
        except psycopg.Error as err:
            raise StoreUnavailableError(self.where, _reason(err)) from None
        except pgschema.SchemaError as err:
            raise StoreUnavailableError(self.where, str(err)) from None
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={"autocommit": True, **CONNECTION},
            timeout=WAIT_SECONDS,
            check=ConnectionPool.check_connection,
            name="poller-store",
            open=True,
        )
        self._queue = RecordQueue(self._write_batch, name="history-writer")

    # --- daemons -----------------------------------------------------------------------

    def acquire_daemon_lock(self) -> None:
        """Join the daemons of this database: a row of our own, heartbeated on a thread."""
        self.daemon_id = uuid.uuid4().hex
        with self._writing("registering this daemon") as conn:
            conn.execute(
                "INSERT INTO poller_daemons VALUES (%s, %s, %s, %s, now(), now())",
                (self.daemon_id, socket.gethostname(), os.getpid(), __version__),
            )
        self._heartbeat = threading.Thread(target=self._beat, name="store-heartbeat", daemon=True)
        self._heartbeat.start()

    def daemons(self) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT host, pid, version, started_at, heartbeat_at, daemon_id = %s, "
            "heartbeat_at > now() - %s FROM poller_daemons ORDER BY started_at, daemon_id",
            (self.daemon_id, self.lease),
        )
        return [
            {
                "host": host,
                "pid": pid,
                "version": version,
                "started_at": utc_text(started),
                "last_heartbeat": utc_text(beat),
                "this": bool(this),
                "alive": bool(alive),
            }
            for host, pid, version, started, beat, this, alive in rows
        ]

    def _beat(self) -> None:
        """Heartbeat, then look for silent daemons, every third of the lease."""
        every = max(self.lease.total_seconds() / 3, 0.5)
        failing = False
        while not self._stopping.wait(every):
            try:
                self.heartbeat()
                if not failing:  # after an outage, the others get a beat to say they live
                    self.sweep()
            except StoreError as err:
                if not failing:  # once, not every beat while the database is away
                    log.error("%s; the heartbeat is tried again every %.0f s", err, every)
                failing = True
            else:
                if failing:
                    log.warning("the heartbeat reaches the state database again")
                failing = False

    def heartbeat(self) -> None:
        with self._writing("heartbeating") as conn:
            beat = conn.execute(
                "UPDATE poller_daemons SET heartbeat_at = now() WHERE daemon_id = %s",
                (self.daemon_id,),
            )
            if beat.rowcount == 0:  # silent past the lease (a stall, a partition): swept
                log.error(
                    "this daemon was silent for longer than settings.daemon_lease_seconds "
                    "and another marked its runs interrupted; it heartbeats again"
                )
                conn.execute(
                    "INSERT INTO poller_daemons VALUES (%s, %s, %s, %s, now(), now())",
                    (self.daemon_id, socket.gethostname(), os.getpid(), __version__),
                )

    def sweep(self) -> int:
        """End the `running` records of daemons silent for the lease, and forget those
        daemons; how many records were ended."""
        with self._writing("ending the runs of silent daemons") as conn:
            silent = conn.execute(
                "DELETE FROM poller_daemons WHERE heartbeat_at <= now() - %s "
                "RETURNING daemon_id, host, pid, heartbeat_at",
                (self.lease,),
            ).fetchall()
            ended = 0
            for daemon_id, host, pid, beat in silent:
                reason = (
                    f"the daemon running it ({host}, pid {pid}) stopped heartbeating at "
                    f"{utc_text(beat)}"
                )
                count = self._end_running(conn, "daemon_id = %s", (daemon_id,), reason)
                ended += count
                log.warning(
                    "daemon %s pid %d sharing the state database has been silent since %s; "
                    "%d of its run(s) are now interrupted",
                    host,
                    pid,
                    utc_text(beat),
                    count,
                )
        return ended

    # --- plumbing shared by the rest ---------------------------------------------------

    def open_reader(self) -> PostgresStore:
        return PostgresStore(self.url, read_only=True, lease_seconds=self.lease.total_seconds())

    def close(self) -> None:
        self._queue.close()
        self._stopping.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            try:
                with self._writing("leaving the daemons") as conn:
                    conn.execute(
                        "DELETE FROM poller_daemons WHERE daemon_id = %s", (self.daemon_id,)
                    )
            except StoreError as err:
                log.warning("%s; the others forget this daemon after its lease", err)
        self._pool.close()

    # --- the hot path ------------------------------------------------------------------

    def claim(self, claims: Sequence[Claim]) -> list[ClaimAnswer]:
        # By job, then fire: every daemon locks jobs in one order (no deadlock), and a job's
        # fires go in time order.
        order = sorted(
            range(len(claims)),
            key=lambda i: (claims[i].job_id, column(claims[i].scheduled_for or _EPOCH)),
        )
        arrays: list[list[Any]] = [[] for _ in range(11)]
        for i in order:
            claim = claims[i]
            record = claim.record.to_dict()
            row = _columns(record)
            full = None if claim.when_full is None else to_json(claim.when_full.to_dict())
            values = (*row[:8], row[9], claim.room, full)  # the columns but the version
            for array, value in zip(arrays, values, strict=True):
                array.append(value)
        with self._connection("claiming fires") as conn:
            [(said,)] = conn.execute(CLAIM_SQL, (self.daemon_id, *arrays, RECORD_VERSION))
        answers: list[ClaimAnswer] = ["taken"] * len(claims)
        for i, answer in zip(order, said, strict=True):
            answers[i] = answer
        return answers

    def save(self, record: Any) -> None:
        row = _columns(record if isinstance(record, dict) else record.to_dict())
        with self._writing("saving a run record") as conn:
            conn.execute(SAVE_SQL, (*row, self.daemon_id))

    def _write_batch(self, results: list[Recordable]) -> None:
        rows = [(*_columns(result.to_dict()), self.daemon_id) for result in results]
        with self._writing("writing run records") as conn, conn.cursor() as cursor:
            cursor.executemany(SAVE_SQL, rows)

    # --- job state ---------------------------------------------------------------------

    def job_states(self) -> dict[str, JobState]:
        rows = self._read("SELECT job_id, grid, anchor, last_fire FROM poller_jobs", ())
        return {job_id: JobState(grid, anchor, last) for job_id, grid, anchor, last in rows}

    def job_anchors(self) -> dict[str, JobState]:
        rows = self._read("SELECT job_id, grid, anchor FROM poller_jobs", ())
        return {job_id: JobState(grid, anchor, None) for job_id, grid, anchor in rows}

    def save_job_states(self, states: dict[str, JobState]) -> dict[str, JobState]:
        rows = [(job_id, state.grid, state.anchor) for job_id, state in states.items()]
        with self._writing("saving job states") as conn:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO poller_jobs AS j VALUES (%s, %s, %s, NULL) ON CONFLICT (job_id) "
                    "DO UPDATE SET grid = excluded.grid, anchor = excluded.anchor "
                    "WHERE j.grid IS DISTINCT FROM excluded.grid",
                    rows,
                )
            stored = conn.execute(
                "SELECT job_id, grid, anchor FROM poller_jobs WHERE job_id = ANY(%s)",
                (list(states),),
            ).fetchall()
        return {job_id: JobState(grid, anchor, None) for job_id, grid, anchor in stored}

    # --- monitoring --------------------------------------------------------------------

    def note(self, job_id: str, name: str) -> Any | None:
        rows = self._read(
            "SELECT value FROM poller_notes WHERE job_id = %s AND name = %s", (job_id, name)
        )
        if not rows:
            return None
        try:
            return json.loads(rows[0][0])
        except ValueError:
            return None  # unreadable: the job starts anew (a new baseline, no failures)

    def save_note(self, job_id: str, name: str, value: Any) -> None:
        text = json.dumps(value, separators=(",", ":"), default=str)
        with self._writing(f"saving the {name} of job {job_id}") as conn:
            conn.execute(
                "INSERT INTO poller_notes VALUES (%s, %s, %s) "
                "ON CONFLICT (job_id, name) DO UPDATE SET value = excluded.value",
                (job_id, name, text),
            )

    def drop_note(self, job_id: str, name: str) -> None:
        with self._writing(f"forgetting the {name} of job {job_id}") as conn:
            conn.execute("DELETE FROM poller_notes WHERE job_id = %s AND name = %s", (job_id, name))

    # --- file listings -----------------------------------------------------------------

    def listing(self, scope: str) -> dict[str, str]:
        rows = self._read("SELECT path, version FROM poller_listings WHERE scope = %s", (scope,))
        return {str(path): str(version) for path, version in rows}

    def save_listing(self, scope: str, versions: Mapping[str, str], now: datetime) -> None:
        with self._writing(f"saving the listing of {scope}") as conn:
            conn.execute("DELETE FROM poller_listing_scopes WHERE scope = %s", (scope,))
            conn.execute("INSERT INTO poller_listing_scopes VALUES (%s, %s)", (scope, now))
            with conn.cursor().copy("COPY poller_listings FROM STDIN") as copy:
                for path, version in versions.items():
                    copy.write_row((scope, path, version))

    def prune_listings(self, max_age_days: int, now: datetime) -> int:
        with self._writing("pruning old listings") as conn:
            gone = conn.execute(
                "DELETE FROM poller_listing_scopes WHERE saved_at < %s",
                (now - timedelta(days=max_age_days),),
            )
            return gone.rowcount

    # --- reads -------------------------------------------------------------------------

    def get(self, run_id: str) -> dict[str, Any] | None:
        queued = self.queued(run_id)
        if queued is not None:
            return queued
        rows = self._read(
            "SELECT run_id, version, record FROM poller_runs WHERE run_id = %s", (run_id,)
        )
        return decode(rows[0]) if rows else None

    def recent(
        self, job_id: str | None = None, limit: int = 20, status: str | None = None
    ) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT run_id, version, record FROM poller_runs "
            "WHERE (%(job)s::text IS NULL OR job_id = %(job)s) "
            "AND (%(status)s::text IS NULL OR status = %(status)s) "
            "ORDER BY started_at DESC, seq DESC LIMIT %(limit)s",
            {"job": job_id, "status": status, "limit": limit},
        )
        return [decode(row) for row in rows]

    def briefs(self, job_ids: list[str], per_job: int) -> dict[str, list[dict[str, Any]]]:
        """Each job's newest `per_job` runs in brief, in one query over the index."""
        rows = self._read(
            "SELECT job.id, run.run_id, CASE WHEN run.version <= %s THEN run.status "
            "ELSE 'unreadable' END, run.trigger, run.started_at, run.finished_at, run.dry_run "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS job(id, n) CROSS JOIN LATERAL "
            "(SELECT * FROM poller_runs WHERE job_id = job.id "
            "ORDER BY started_at DESC, seq DESC LIMIT %s) AS run "
            "ORDER BY job.n, run.started_at DESC, run.seq DESC",
            (RECORD_VERSION, job_ids, per_job),
        )
        found: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
        for job_id, run_id, status, trigger, started, finished, dry_run in rows:
            duration = None if finished is None else max(0, round(_ms(finished - started)))
            found[job_id].append(brief(run_id, status, trigger, column(started), duration, dry_run))
        return found

    def totals(self) -> dict[str, int]:
        rows = self._read("SELECT status, count(*) FROM poller_runs GROUP BY status", ())
        return {str(status): int(count) for status, count in rows}

    # --- housekeeping ------------------------------------------------------------------

    def mark_interrupted(self, reason: str, now: datetime) -> int:
        """End the `running` records of this daemon and of daemons no longer heartbeating
        (another daemon's runs are its own to end)."""
        with self._writing("recording interrupted runs") as conn:
            return self._end_running(
                conn,
                f"(daemon_id = %s OR daemon_id NOT IN ({LIVE_DAEMONS}))",
                (self.daemon_id, self.lease),
                reason,
                now,
            )

    def _end_running(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        where: str,
        args: tuple[Any, ...],
        reason: str,
        now: datetime | None = None,
    ) -> int:
        """Turn the `running` records matching `where` into `interrupted` ones (in the
        caller's transaction); how many."""
        rows = conn.execute(
            f"SELECT run_id, version, record FROM poller_runs WHERE status = 'running' "
            f"AND {where} FOR UPDATE",
            args,
        ).fetchall()
        if now is None:
            [(now,)] = conn.execute("SELECT now()").fetchall()
        ended = {"status": "interrupted", "reason": reason, "finished_at": utc_text(now)}
        updated = [
            _columns({**record, **ended})
            for record in map(decode, rows)
            if record.get("status") != "unreadable"
        ]
        if updated:
            with conn.cursor() as cursor:
                cursor.executemany(SAVE_SQL, [(*row, None) for row in updated])
        return len(updated)

    def prune(self, max_age_days: int, max_runs_per_job: int, now: datetime) -> int:
        with self._writing("pruning the history") as conn:
            deleted = conn.execute(
                "DELETE FROM poller_runs WHERE started_at < %s AND status != 'running'",
                (now - timedelta(days=max_age_days),),
            ).rowcount
            deleted += conn.execute(
                "DELETE FROM poller_runs WHERE run_id IN (SELECT run_id FROM ("
                "SELECT run_id, status, row_number() OVER (PARTITION BY job_id "
                "ORDER BY started_at DESC, seq DESC) AS n FROM poller_runs) AS ranked "
                "WHERE n > %s AND status != 'running')",
                (max_runs_per_job,),
            ).rowcount
        return int(deleted)

    # --- plumbing ----------------------------------------------------------------------

    @contextmanager
    def _connection(self, what: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A pooled connection (autocommit); a failure becomes a StoreError."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as err:
            raise StoreError(f"{self.where}: {what}", _reason(err)) from None

    @contextmanager
    def _writing(self, what: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """One transaction; any failure rolls it all back and becomes a StoreError."""
        with self._connection(what) as conn, conn.transaction():
            yield conn

    def _read(self, sql: str, args: Any) -> list[Any]:
        with self._connection("reading") as conn:
            return conn.execute(sql, args).fetchall()


_EPOCH = parse("1970-01-01T00:00:00+00:00")


def _columns(record: dict[str, Any]) -> tuple[Any, ...]:
    """A run record's columns but the daemon's: run_id … record (JSON text)."""
    scheduled, started, finished = (
        record.get("scheduled_for"),
        record.get("started_at") or record.get("scheduled_for"),
        record.get("finished_at"),
    )
    return (
        record["run_id"],
        record["job_id"],
        record["trigger"],
        parse(scheduled) if scheduled else None,
        parse(started) if started else datetime.now().astimezone(),
        parse(finished) if finished else None,
        record["status"],
        bool(record.get("dry_run")),
        RECORD_VERSION,
        to_json(record),
    )


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def _reason(err: psycopg.Error) -> str:
    """What went wrong, in one line: psycopg's messages can span lines (DETAIL, HINT)."""
    return mask_text(" ".join(str(err).split()) or type(err).__name__)
