"""The daemon's state: jobs on the scheduler, the worker pool, max_instances, catch-up and reload.

The loop itself lives in app.py; this module decides what a due fire becomes (a run, a
catch-up, a skipped record) and hands runs to a bounded pool, never running a chain on
the loop thread. Every decision lands in the run history.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from lookup import ClientPool
from poller import chain
from poller.clock import Clock
from poller.config import Config, Job, Schedule
from poller.history import HistoryStore, JobState
from poller.pool import WorkerPool
from poller.redaction import Redactor
from poller.results import RunResult, Trigger, new_run_id, skipped_result, started_result
from poller.scheduling import FireJob, HeapScheduler
from poller.timing import NeverFiresError, fires_between, next_fire

log = logging.getLogger(__name__)

STARTUP_LOG_JOBS = 50
"""Start-up logs the next fire of this many jobs, then a count of the rest."""
MAX_CATCH_UP_RUNS = 100
"""When not coalescing, at most this many missed fires are run after downtime."""
CATCH_UP_SCAN_LIMIT = 10_000
"""Missed fires counted one by one; past this many the rest are skipped as one misfire."""
ON_TIME_SECONDS = 1.0
"""A single fire handed off within this lateness counts as `schedule`, later as `catch-up`."""

RunChain = Callable[..., RunResult]


def definition_of(config: Config, job: Job) -> str:
    """A fingerprint of what a job does and when; a reload reschedules a job when it changes."""
    digest = hashlib.sha256(job.model_dump_json(by_alias=True).encode())
    digest.update(str(job.timezone or config.settings.timezone).encode())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True, slots=True)
class Planned:
    """A scheduled job: what runs, when, and the instant its `every` fires count from."""

    job: Job
    schedule: Schedule
    anchor: datetime

    def after(self, instant: datetime) -> datetime:
        """Its next fire strictly after `instant`."""
        return next_fire(self.schedule, instant, self.anchor)

    __call__ = after  # the plan its FireJob follows, without a bound method per job


@dataclasses.dataclass(frozen=True, slots=True)
class ReloadSummary:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: int

    def __str__(self) -> str:
        def names(ids: tuple[str, ...]) -> str:
            return ", ".join(ids) if ids else "none"

        return (
            f"added {names(self.added)}; changed {names(self.changed)}; "
            f"removed {names(self.removed)}; {self.unchanged} unchanged"
        )


class Daemon:
    """Schedules a Config's jobs and runs their fires; one per process."""

    def __init__(
        self,
        config: Config,
        store: HistoryStore,
        clock: Clock,
        run_chain: RunChain = chain.run_job,
        redactor: Redactor | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.run_chain = run_chain
        self.redactor = redactor or Redactor(config.secret_values())
        self.scheduler = HeapScheduler(clock)
        self.clients = ClientPool(config.environments, redactor=self.redactor)
        self.pool = WorkerPool(config.settings.max_workers, thread_name_prefix="run")
        self._inflight: dict[str, int] = {}
        self._idle = threading.Condition(threading.Lock())
        self._planned: dict[str, Planned] = {}
        self._fire = self._on_fire  # one bound method for every FireJob
        self.started_at = clock.now()
        self.last_tick, self.reloads = self.started_at, {"applied": 0, "failed": 0}

    # --- start and reload -------------------------------------------------------------

    def start(self) -> None:
        """Mark crashed runs, schedule every job (catching up after downtime), run_on_start."""
        now = self.clock.now()
        interrupted = self.store.mark_interrupted("the daemon stopped during the run", now)
        interrupted += self.store.mark_lost_fires(now)
        if interrupted:
            log.warning(
                "%d run(s) left running by the last daemon are now interrupted", interrupted
            )
        states = self.store.job_states()
        with self.store.transaction():
            new_states: list[tuple[str, str, datetime]] = []
            for job in self.config.jobs:
                self._schedule(job, states.get(job.id), now, catch_up=True, new_states=new_states)
            self.store.save_job_states(new_states)
            for job in self.config.jobs:
                if job.enabled and job.run_on_start:
                    self.dispatch(job, now, "startup")
        for job in self.config.jobs[:STARTUP_LOG_JOBS]:
            fire_job = self.scheduler.by_id.get(job.id)
            when = fire_job.due_at.isoformat() if fire_job else "never (disabled)"
            log.info("job %s (%s): next fire %s", job.id, job.label, when)
        if len(self.config.jobs) > STARTUP_LOG_JOBS:
            log.info(
                "... and %d more job(s); `app.py check` lists them all",
                len(self.config.jobs) - STARTUP_LOG_JOBS,
            )

    def apply(self, config: Config) -> ReloadSummary:
        """Apply a new valid config: reschedule changed and new jobs, stop removed ones."""
        now = self.clock.now()
        old = {job.id: definition_of(self.config, job) for job in self.config.jobs}
        new = {job.id: definition_of(config, job) for job in config.jobs}
        added = tuple(job_id for job_id in new if job_id not in old)
        changed = tuple(job_id for job_id in new if job_id in old and old[job_id] != new[job_id])
        removed = tuple(job_id for job_id in old if job_id not in new)
        self.redactor.configure(config.secret_values())
        if config.environments != self.config.environments:
            self.clients = ClientPool(config.environments, redactor=self.redactor)
        for setting in ("max_workers", "state_db", "log_file", "log_format", "api"):
            if getattr(config.settings, setting) != getattr(self.config.settings, setting):
                log.warning(
                    "settings.%s changed; it takes effect when the daemon restarts", setting
                )
        self.config = config
        for job_id in removed:
            fire_job = self.scheduler.by_id.get(job_id)
            if fire_job is not None:
                self.scheduler.cancel_job(fire_job)
            self._planned.pop(job_id, None)
        states = self.store.job_states()
        with self.store.transaction():
            new_states: list[tuple[str, str, datetime]] = []
            for job in config.jobs:
                if job.id in added or job.id in changed:
                    self._schedule(
                        job, states.get(job.id), now, catch_up=False, new_states=new_states
                    )
                elif job.id in self._planned:  # same definition: keep its fire, take the object
                    self._planned[job.id] = dataclasses.replace(self._planned[job.id], job=job)
            self.store.save_job_states(new_states)
        return ReloadSummary(added, changed, removed, len(new) - len(added) - len(changed))

    def _schedule(
        self,
        job: Job,
        state: JobState | None,
        now: datetime,
        *,
        catch_up: bool,
        new_states: list[tuple[str, str, datetime]],
    ) -> None:
        """Put `job` on the scheduler; a new or changed job's state goes to `new_states`.

        A new or changed job's `every` counts from `now` in whole seconds (readable fire
        times), an anchor the jobs of one start or reload share.
        """
        definition = definition_of(self.config, job)
        if state is None or state.definition != definition:
            anchor = new_states[-1][2] if new_states else now.replace(microsecond=0)
            state = JobState(definition, anchor, last_fire=None)
            new_states.append((job.id, definition, anchor))
        existing = self.scheduler.by_id.get(job.id)
        if existing is not None:
            self.scheduler.cancel_job(existing)
        self._planned.pop(job.id, None)
        if not job.enabled:
            return
        planned = Planned(job, self.config.schedule(job), state.anchor)
        try:
            due_at = planned.after(state.last_fire if catch_up and state.last_fire else now)
        except NeverFiresError as err:
            log.error("job %s is not scheduled: %s", job.id, err)
            return
        self._planned[job.id] = planned
        self.scheduler.add(job.id, planned, due_at, self._fire)

    # --- firing -----------------------------------------------------------------------

    def _on_fire(self, fire_job: FireJob) -> None:
        """Called by the scheduler on the loop thread: decide and hand off; never raises."""
        try:
            self._handle_fire(fire_job)
        except Exception:
            log.exception(
                "job %s: could not hand off its fire at %s",
                fire_job.job_id,
                fire_job.due_at.isoformat(),
            )

    def _handle_fire(self, fire_job: FireJob) -> None:
        planned = self._planned.get(fire_job.job_id)
        if planned is None:
            self.scheduler.cancel_job(fire_job)
            return
        job = planned.job
        now = self.clock.now()
        upcoming = planned.after(fire_job.due_at)
        if upcoming > now:
            fire_job.upcoming = upcoming
            late = (now - fire_job.due_at).total_seconds()
            if late <= ON_TIME_SECONDS and late <= job.misfire_grace_seconds:
                self.dispatch(job, fire_job.due_at, "schedule", now)  # the usual case
                return
            fires = [fire_job.due_at]
        else:
            fires = [
                fire_job.due_at,
                *fires_between(
                    planned.schedule,
                    fire_job.due_at,
                    now,
                    planned.anchor,
                    limit=CATCH_UP_SCAN_LIMIT,
                ),
            ]
        grace = timedelta(seconds=job.misfire_grace_seconds)
        missed = [f for f in fires if now - f > grace]
        in_time = [f for f in fires if now - f <= grace]
        single_on_time = len(fires) == 1 and (now - fires[0]).total_seconds() <= ON_TIME_SECONDS
        trigger: Trigger = "schedule" if single_on_time else "catch-up"
        if missed:
            why = f"misfire, more than {job.misfire_grace_seconds:g}s late"
            self._skip_fires(job, missed, why, trigger, now, logging.WARNING)
        to_run = in_time[-1:] if job.coalesce else in_time[-MAX_CATCH_UP_RUNS:]
        not_run = in_time[: len(in_time) - len(to_run)]
        if not_run:
            why = (
                f"coalesced with the fire at {to_run[0].isoformat()}"
                if job.coalesce
                else f"over the catch-up limit of {MAX_CATCH_UP_RUNS}"
            )
            self._skip_fires(job, not_run, why, trigger, now, logging.INFO)
        for scheduled_for in to_run:
            self.dispatch(job, scheduled_for, trigger)
        fire_job.due_at = now if len(fires) > CATCH_UP_SCAN_LIMIT else fires[-1]

    def _skip_fires(
        self,
        job: Job,
        fires: list[datetime],
        why: str,
        trigger: Trigger,
        now: datetime,
        level: int,
    ) -> None:
        """One skipped record (and log line) for a series of fires that will not run."""
        reason = (
            f"{why}: {len(fires)} fire(s) from {fires[0].isoformat()} to {fires[-1].isoformat()}"
        )
        log.log(level, "job %s: %s", job.id, reason)
        if self.store.claim_fire(job.id, fires[-1]):
            self.store.save_later(
                skipped_result(job.id, reason, trigger=trigger, at=now, scheduled_for=fires[-1])
            )

    def dispatch(
        self, job: Job, scheduled_for: datetime, trigger: Trigger, now: datetime | None = None
    ) -> str | None:
        """Start a run of `job` on the pool; returns its run id, or None when not started.

        A scheduled fire (trigger schedule or catch-up) is claimed first, so it runs once.
        `now` is the caller's reading of the clock, when it has one.
        """
        now = now or self.clock.now()
        if trigger in ("schedule", "catch-up") and not self.store.claim_fire(job.id, scheduled_for):
            log.warning(
                "job %s: the fire at %s was already handled; not run twice",
                job.id,
                scheduled_for.isoformat(),
            )
            return None
        with self._idle:
            running = self._inflight.get(job.id, 0)
            if running < job.max_instances:
                self._inflight[job.id] = running + 1
        if running >= job.max_instances:
            reason = f"already running ({running} of max_instances {job.max_instances})"
            log.info("job %s: fire at %s skipped: %s", job.id, scheduled_for.isoformat(), reason)
            self.store.save_later(
                skipped_result(job.id, reason, trigger=trigger, at=now, scheduled_for=scheduled_for)
            )
            return None
        record = started_result(
            job.id,
            trigger=trigger,
            started_at=now,
            scheduled_for=scheduled_for,
            run_id=new_run_id(),
        )
        self.store.save_later(record)
        self.pool.submit(self._run, job, self.config, self.clients, record)
        return record.run_id

    def _run(self, job: Job, config: Config, clients: ClientPool, record: RunResult) -> None:
        try:
            result = self.run_chain(
                job,
                config,
                clients,
                run_id=record.run_id,
                trigger=record.trigger,
                scheduled_for=record.scheduled_for,
                clock=self.clock,
            )
            self.store.save_later(result)
        except Exception:
            log.exception("job %s: run %s could not be recorded", job.id, record.run_id)
        finally:
            with self._idle:
                self._inflight[job.id] -= 1
                self._idle.notify_all()

    # --- state for the loop, the API and shutdown ---------------------------------------

    def inflight(self) -> int:
        with self._idle:
            return sum(self._inflight.values())

    def stop(self, grace_seconds: float) -> int:
        """Stop firing; let runs finish up to the grace period; mark the rest interrupted.

        Returns how many runs were still going when the grace period ended.
        """
        self.scheduler.clear()
        deadline = time.monotonic() + grace_seconds
        with self._idle:
            while sum(self._inflight.values()) and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            left = sum(self._inflight.values())
        self.pool.shutdown()
        self.store.flush()
        if left:
            self.store.mark_interrupted("the daemon was stopped during the run", self.clock.now())
        return left

    def status(self) -> dict[str, Any]:
        due = self.scheduler.next_due()
        return {
            "jobs": len(self.scheduler.by_id),
            "next_fire": due.isoformat() if due else None,
            "inflight": self.inflight(),
        }

    # --- for the HTTP API (poller.api) ------------------------------------------------

    def trigger(self, job: Job) -> str | None:
        """Run a job now (trigger "manual"); its run id, or None while max_instances is full.

        Raises:
            RuntimeError: the pool is shut down (the daemon is stopping).
        """
        return self.dispatch(job, self.clock.now(), "manual")

    def running(self, job_id: str) -> int:
        """Runs of this job going on now."""
        with self._idle:
            return self._inflight.get(job_id, 0)

    def pool_alive(self) -> bool:
        """False once the worker pool is shut down (stopping, or stopped)."""
        return not self.pool.is_shut_down

    def count_reload(self, applied: bool) -> None:
        """Note a reload's outcome, for /status and /metrics."""
        self.reloads["applied" if applied else "failed"] += 1
