"""The daemon's state: jobs on the scheduler, the worker pool, max_instances, catch-up and reload.

The loop itself lives in app.py; this module decides what a due fire becomes (a run, a
catch-up, a skipped record) and hands runs to a bounded pool, never running a chain on
the loop thread. Every decision lands in the run history.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lookup import ClientPool
from poller import chain
from poller.clock import Clock
from poller.config import Config, Job
from poller.history import HistoryStore, JobState
from poller.results import RunResult, Trigger, new_run_id, skipped_result, started_result
from poller.scheduling import FireJob, HeapScheduler
from poller.timing import NeverFiresError, fires_between, next_fire

log = logging.getLogger(__name__)

MAX_CATCH_UP_RUNS = 100
"""When not coalescing, at most this many missed fires are run after downtime."""
CATCH_UP_SCAN_LIMIT = 10_000
"""Missed fires counted one by one; past this many the rest are skipped as one misfire."""
ON_TIME_SECONDS = 1.0
"""A single fire handed off within this lateness counts as `schedule`, later as `catch-up`."""

RunChain = Callable[..., RunResult]


def definition_of(config: Config, job: Job) -> str:
    """A fingerprint of what a job does and when; a reload reschedules a job when it changes."""
    body = job.model_dump(mode="json", by_alias=True)
    body["__timezone"] = config.schedule(job).timezone
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
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
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.run_chain = run_chain
        self.scheduler = HeapScheduler(clock)
        self.clients = ClientPool(config.environments)
        self.pool = ThreadPoolExecutor(
            max_workers=config.settings.max_workers, thread_name_prefix="run"
        )
        self._inflight: dict[str, int] = {}
        self._idle = threading.Condition()
        self._definitions: dict[str, str] = {}
        self._anchors: dict[str, datetime] = {}
        self.started_at = clock.now()

    # --- start and reload -------------------------------------------------------------

    def start(self) -> None:
        """Mark crashed runs, schedule every job (catching up after downtime), run_on_start."""
        now = self.clock.now()
        interrupted = self.store.mark_interrupted("the daemon stopped during the run", now)
        if interrupted:
            log.warning(
                "%d run(s) left running by the last daemon are now interrupted", interrupted
            )
        states = self.store.job_states()
        for job in self.config.jobs:
            self._schedule(job, states.get(job.id), now, catch_up=True)
        for job in self.config.jobs:
            if job.enabled and job.run_on_start:
                self.dispatch(job, now, "startup")
        for job in self.config.jobs:
            fire_job = self.scheduler.by_id.get(job.id)
            when = fire_job.due_at.isoformat() if fire_job else "never (disabled)"
            log.info("job %s (%s): next fire %s", job.id, job.label, when)

    def apply(self, config: Config) -> ReloadSummary:
        """Apply a new valid config: reschedule changed and new jobs, stop removed ones."""
        now = self.clock.now()
        old = self._definitions
        new = {job.id: definition_of(config, job) for job in config.jobs}
        added = tuple(job_id for job_id in new if job_id not in old)
        changed = tuple(job_id for job_id in new if job_id in old and old[job_id] != new[job_id])
        removed = tuple(job_id for job_id in old if job_id not in new)
        if config.environments != self.config.environments:
            self.clients = ClientPool(config.environments)
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
            del self._definitions[job_id]
        states = self.store.job_states()
        for job in config.jobs:
            if job.id in added or job.id in changed:
                self._schedule(job, states.get(job.id), now, catch_up=False)
        return ReloadSummary(added, changed, removed, len(new) - len(added) - len(changed))

    def _schedule(self, job: Job, state: JobState | None, now: datetime, catch_up: bool) -> None:
        definition = definition_of(self.config, job)
        self._definitions[job.id] = definition
        if state is None or state.definition != definition:
            # `every` counts from here; whole seconds keep fire times readable.
            state = JobState(definition, anchor=now.replace(microsecond=0), last_fire=None)
            self.store.save_job_state(job.id, state)
        existing = self.scheduler.by_id.get(job.id)
        if existing is not None:
            self.scheduler.cancel_job(existing)
        if not job.enabled:
            return
        schedule = self.config.schedule(job)
        anchor = state.anchor
        self._anchors[job.id] = anchor

        def plan(after: datetime) -> datetime:
            return next_fire(schedule, after, anchor)

        try:
            due_at = plan(state.last_fire if catch_up and state.last_fire else now)
        except NeverFiresError as err:
            log.error("job %s is not scheduled: %s", job.id, err)
            return
        self.scheduler.add(job.id, plan, due_at, self._on_fire)

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
        job = self.config.job_map.get(fire_job.job_id)
        if job is None:
            self.scheduler.cancel_job(fire_job)
            return
        now = self.clock.now()
        schedule = self.config.schedule(job)
        anchor = self._anchors[job.id]
        fires = [
            fire_job.due_at,
            *fires_between(schedule, fire_job.due_at, now, anchor, limit=CATCH_UP_SCAN_LIMIT),
        ]
        grace = timedelta(seconds=job.misfire_grace_seconds)
        missed = [f for f in fires if now - f > grace]
        in_time = [f for f in fires if now - f <= grace]
        single_on_time = len(fires) == 1 and (now - fires[0]).total_seconds() <= ON_TIME_SECONDS
        trigger: Trigger = "schedule" if single_on_time else "catch-up"
        if missed:
            reason = (
                f"misfire: {len(missed)} fire(s) from {missed[0].isoformat()} to "
                f"{missed[-1].isoformat()} were more than {job.misfire_grace_seconds:g}s late"
            )
            log.warning("job %s: %s", job.id, reason)
            self._record(
                skipped_result(job.id, reason, trigger=trigger, at=now, scheduled_for=missed[-1])
            )
        to_run = in_time[-1:] if job.coalesce else in_time[-MAX_CATCH_UP_RUNS:]
        if len(in_time) > len(to_run):
            log.info("job %s: %d missed fires coalesced into one run", job.id, len(in_time))
        for scheduled_for in to_run:
            self.dispatch(job, scheduled_for, trigger)
        last = fires[-1]
        if len(fires) > CATCH_UP_SCAN_LIMIT:
            last = now
        fire_job.due_at = last
        self.store.set_last_fire(job.id, last)

    def dispatch(self, job: Job, scheduled_for: datetime, trigger: Trigger) -> str | None:
        """Start a run of `job` on the pool; returns its run id, or None when not started."""
        now = self.clock.now()
        with self._idle:
            running = self._inflight.get(job.id, 0)
            if running >= job.max_instances:
                reason = f"already running ({running} of max_instances {job.max_instances})"
                log.info(
                    "job %s: fire at %s skipped: %s", job.id, scheduled_for.isoformat(), reason
                )
                self._record(
                    skipped_result(
                        job.id, reason, trigger=trigger, at=now, scheduled_for=scheduled_for
                    )
                )
                return None
            record = started_result(
                job.id,
                trigger=trigger,
                started_at=now,
                scheduled_for=scheduled_for,
                run_id=new_run_id(),
            )
            if not self.store.claim(record.to_dict()):
                log.warning(
                    "job %s: the fire at %s was already handled; not run twice",
                    job.id,
                    scheduled_for.isoformat(),
                )
                return None
            self._inflight[job.id] = running + 1
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
            self.store.save(result.to_dict())
        except Exception:
            log.exception("job %s: run %s could not be recorded", job.id, record.run_id)
        finally:
            with self._idle:
                self._inflight[job.id] -= 1
                self._idle.notify_all()

    def _record(self, result: RunResult) -> None:
        if result.trigger in ("schedule", "catch-up"):
            self.store.claim(result.to_dict())
        else:
            self.store.save(result.to_dict())

    # --- state for the loop, the API and shutdown ---------------------------------------

    def inflight(self) -> int:
        with self._idle:
            return sum(self._inflight.values())

    def stop(self, grace_seconds: float) -> int:
        """Stop firing; let runs finish up to the grace period; mark the rest interrupted.

        Returns how many runs were still going when the grace period ended.
        """
        self.scheduler.clear()
        deadline = self.clock.now() + timedelta(seconds=grace_seconds)
        with self._idle:
            while sum(self._inflight.values()) and self.clock.now() < deadline:
                self._idle.wait(timeout=min(0.5, grace_seconds))
            left = sum(self._inflight.values())
        self.pool.shutdown(wait=False, cancel_futures=True)
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
