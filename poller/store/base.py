"""The store's contract: everything the daemon keeps across restarts, behind one interface.

A store holds run records, each job's state (the `every` anchor and its last claimed fire)
and the daemons using it. Implementations (poller.store.sqlite: one daemon;
poller.store.postgres: several, SPEC §11) pass the one contract suite in tests/contract/.

The promise (SPEC §4): after a `kill -9` at any instant, every claimed fire has exactly one
record, and no fire runs twice. How: a scheduled fire is *claimed* before its run starts,
in one transaction that moves its job's last fire forward (a claim of a fire at or before
it is refused) and keeps the fire's record, or the makings of it: a skipped fire's final
record, or a pending claim of a run (run id, trigger, instants) until the run's own record
is written, which removes the claim in the same transaction. A run's later records (its
end) wait in a queue; after a crash, mark_interrupted() turns the runs left `running` and
the pending claims into `interrupted` records. What a power loss can undo depends on the
implementation's durability setting and is said there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from poller.errors import PollerError


@dataclass(frozen=True, slots=True)
class JobState:
    """What the store remembers of a job between restarts.

    `grid` is the fingerprint of the fields that decide when the job fires (None when not
    known: a state kept by an older Poller); `anchor` is the instant its `every` fires count
    from; `last_fire` the latest fire claimed.
    """

    grid: str | None
    anchor: datetime
    last_fire: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    """A fire to claim (or a manual run to start: `scheduled_for` None), with the first
    record of what became of it.

    `room`: for a run, how many runs of its job other daemons may have going (its
    max_instances less this daemon's own, this one included); `when_full` is the skipped
    record written instead when they have more. None for a store of one daemon.
    """

    job_id: str
    scheduled_for: datetime | None
    record: Any  # a RunResult (poller.run.results): running, or skipped
    room: int | None = None
    when_full: Any = None


ClaimAnswer = Literal["claimed", "taken", "full"]
"""What became of a claim: its record is written; that fire (or a later one of its job)
was claimed before, so nothing is written; or other daemons' runs of its job left no
room, so its `when_full` record is written instead."""


def brief(
    run_id: str,
    status: str,
    trigger: str,
    started_at: str,
    duration_ms: int | None,
    dry_run: object,
) -> dict[str, Any]:
    """A run in brief, as Store.briefs() gives it."""
    return {
        "run_id": run_id,
        "status": status,
        "trigger": trigger,
        "started_at": started_at,
        "duration_ms": duration_ms,
        "dry_run": bool(dry_run),
    }


class StoreError(PollerError):
    """The store cannot be written (or read) now: a full disk, a read-only file, I/O errors."""

    def __init__(self, where: str, cause: BaseException | str) -> None:
        self.where = where
        self.cause = str(cause)
        super().__init__(f"{where}: {self.cause}")


class Store(Protocol):
    """What the daemon, the API and the commands ask of durable state.

    Every method may raise StoreError when the storage fails; none leaves half a write.
    """

    shared: bool
    """Whether several daemons may use the store at once."""

    def acquire_daemon_lock(self) -> None:
        """Become a daemon of this store for this process's life: its only one (SQLite;
        another daemon makes this raise PollerError), or one of several (PostgreSQL)."""
        ...

    def daemons(self) -> list[dict[str, Any]]:
        """The daemons using the store: host, pid, version, started_at and last_heartbeat
        (ISO text, or None where not known), `this` (this handle's own) and `alive`."""
        ...

    def close(self) -> None:
        """Write what save_later() holds, then release everything."""
        ...

    def open_reader(self) -> Store:
        """Another handle on the same data, for reads that must not wait behind the loop's
        writes (the API's); it is closed by its user."""
        ...

    # --- the hot path ----------------------------------------------------------------

    def claim(self, claims: Sequence[Claim]) -> list[ClaimAnswer]:
        """Claim fires (and start manual runs) and write their first records, all in one
        transaction: what became of each claim. Raises StoreError with nothing written."""
        ...

    def save(self, record: Any) -> None:
        """Write a record (a RunResult, or a SPEC §4 dict) now, replacing one of the same run."""
        ...

    def save_later(self, record: Any) -> None:
        """Queue a RunResult's newer state; a writer commits queued records in batches.

        When a batch cannot be written it is kept and retried (failing() says why).
        """
        ...

    def flush(self) -> None:
        """Wait until every queued record is written (or its batch failed once)."""
        ...

    def queued(self, run_id: str) -> dict[str, Any] | None:
        """A run's newest record while it waits in save_later()'s queue, else None."""
        ...

    def failing(self) -> str | None:
        """Why queued records cannot be written now, or None."""
        ...

    # --- job state -------------------------------------------------------------------

    def job_states(self) -> dict[str, JobState]:
        """Each known job's state, by job id (the daemon's: it reads the last fires)."""
        ...

    def job_anchors(self) -> dict[str, JobState]:
        """Each job's grid and anchor as last saved, without its last fire: what any
        process may read beside a running daemon (`app.py check` and `jobs`)."""
        ...

    def save_job_states(self, states: dict[str, JobState]) -> dict[str, JobState]:
        """Set jobs' grid and anchor, unless the store holds that grid already: the first
        process to save a grid sets its anchor. Returns the grid and anchor each of these
        jobs has now (last_fire None: it only ever moves through claim())."""
        ...

    # --- monitoring --------------------------------------------------------------------

    def note(self, job_id: str, name: str) -> Any | None:
        """What a job's monitoring noted under `name` (JSON), or None: a change-detection
        baseline, alert state (poller.monitor)."""
        ...

    def save_note(self, job_id: str, name: str, value: Any) -> None:
        """Keep a JSON value under (job, name), replacing the one before."""
        ...

    def drop_note(self, job_id: str, name: str) -> None:
        """Forget the value under (job, name), if any."""
        ...

    # --- file listings (SPEC §10) -------------------------------------------------------

    def listing(self, scope: str) -> dict[str, str]:
        """The files (path → version) of the last listing saved for `scope` (a source and
        a pattern, poller.kafka.listing), or {} for none."""
        ...

    def save_listing(self, scope: str, versions: Mapping[str, str], now: datetime) -> None:
        """Replace `scope`'s listing with `versions`, in one transaction."""
        ...

    def prune_listings(self, max_age_days: int, now: datetime) -> int:
        """Forget the listings not saved for `max_age_days`; how many scopes went."""
        ...

    # --- reads -----------------------------------------------------------------------

    def get(self, run_id: str) -> dict[str, Any] | None:
        """A run's newest record (a queued one first), or None."""
        ...

    def recent(
        self, job_id: str | None = None, limit: int = 20, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Written records, newest first."""
        ...

    def briefs(self, job_ids: list[str], per_job: int) -> dict[str, list[dict[str, Any]]]:
        """Each job's newest runs in brief: run_id, status, trigger, started_at,
        duration_ms, dry_run (False for a record from before dry_run was kept)."""
        ...

    def totals(self) -> dict[str, int]:
        """Written records counted by status."""
        ...

    # --- housekeeping ----------------------------------------------------------------

    def mark_interrupted(self, reason: str, now: datetime) -> int:
        """Turn the records left `running` (by this daemon, or by one no longer alive)
        into `interrupted`; how many there were."""
        ...

    def prune(self, max_age_days: int, max_runs_per_job: int, now: datetime) -> int:
        """Delete finished runs past the age limit or beyond the newest N of their job."""
        ...
