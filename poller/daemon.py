"""The daemon's core: `tick(now)` turns due fires into claimed records and handed-off runs.

One wake, in order: the scheduler (poller.scheduling) yields each due job; `_decide` says
what its fires become (a run, a catch-up backlog, skipped records for misfires,
coalesced fires and a full max_instances); the store claims every decided fire in one
transaction, with its first record; only then are the runs handed to the worker pool.
If that transaction cannot be written (a full disk), nothing of the wake is kept: the
fires stay due, no run starts unclaimed, and the next ticks retry until the store
recovers, when the usual misfire rules judge how late each fire is. A chain never runs
on the loop thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from poller.clock import Clock
from poller.config.kafka import with_environment
from poller.config.models import Config, Job
from poller.executors.local import LocalExecutor
from poller.executors.slots import Executor
from poller.firing import Firing, Wake
from poller.monitor import Monitor
from poller.plans import Planned, ReloadSummary, grid_of, plan_jobs
from poller.redaction import Redactor
from poller.run import chain
from poller.run.client import ClientPool
from poller.run.results import RunResult, Trigger, started_result
from poller.scheduling import FireJob, HeapScheduler
from poller.store import Claim, Store, StoreError
from poller.timeformat import seconds_text, text
from poller.timing import NeverFiresError

log = logging.getLogger(__name__)

STARTUP_LOG_JOBS = 50
"""Start-up logs the next fire of this many jobs, then a count of the rest."""
MAX_WAIT_SECONDS = 30.0
"""No wait is longer, so a wall-clock jump or a suspend is noticed soon."""
LATE_WAKE_SECONDS = 5.0
"""Waking later than planned by more than this is logged (suspend, stall, clock jump)."""
CLAIM_RETRY_SECONDS = 1.0
"""While the store fails, claims are tried again this often."""
REPORT_EVERY = timedelta(minutes=1)
"""While the store fails, one line this often says what is pending (log and stderr)."""
PRUNE_EVERY = timedelta(hours=1)
STALL_SECONDS = 90.0
"""/health calls the loop stalled when it has not ticked for this long."""

RunChain = Callable[..., RunResult]


class Daemon:
    """Schedules a Config's jobs and runs their fires; one per process."""

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        run_chain: RunChain = chain.run_job,
        redactor: Redactor | None = None,
        report: Callable[[str], None] = lambda line: None,
    ) -> None:
        """`report` is told, besides the log, what the operator must see (a failing store)."""
        self.config = config
        self.report = report
        self.store = store
        self.clock = clock
        self.redactor = redactor or Redactor(config.secret_values())
        self.scheduler = HeapScheduler(clock)
        self.clients = ClientPool(
            config.environments,
            clock,
            redactor=self.redactor,
            connections=config.calls_at_once(),
            kafka=with_environment(config.settings.kafka, os.environ),
        )
        self.monitor = Monitor(config, store, self.redactor, clock, save=store.save_later)
        self.executor: Executor
        executor = config.settings.executor
        if executor.type == "kafka":
            # Imported here: confluent-kafka loads librdkafka, which the local pool needs not.
            from poller.executors.kafka import KafkaExecutor

            self.executor = KafkaExecutor(
                executor,
                with_environment(config.settings.kafka, os.environ),
                store,
                clock,
                self.redactor,
                on_done=self._run_ended,
                monitor=self.monitor,
            )
        else:
            self.executor = LocalExecutor(
                config.settings.max_workers,
                store,
                clock,
                run_chain,
                on_done=self._run_ended,
                monitor=self.monitor,
            )
        self._planned: dict[str, Planned] = {}
        self.firing = Firing(self.executor, shared=store.shared)
        self._fire = self._on_fire  # one bound method for every FireJob
        self._wake: Wake | None = None
        self.started_at = self.last_tick = clock.now()
        self._planned_wake: datetime | None = None
        self._pruned_at = self.started_at - PRUNE_EVERY
        self.store_failing: tuple[datetime, str] | None = None  # since, why
        self._reported_at: datetime | None = None
        self.is_stopping = False
        self.reloads = {"applied": 0, "failed": 0}
        self.config_invalid: tuple[datetime, tuple[str, ...]] | None = None
        """Since when the config file on disk is invalid, and its problems (the last good
        config runs on meanwhile); None while the file is the running config."""
        self.on_skipped: Callable[[RunResult], None] = lambda record: None
        """Told of every fire the loop decides not to run (misfire, already running):
        those records never pass through run_chain (poller.api.metrics counts them)."""

    # --- start and reload -------------------------------------------------------------

    def start(self) -> None:
        """Mark crashed runs, schedule every job (catching up after downtime), run_on_start."""
        self.executor.start(self.config)
        now = self.clock.now()
        interrupted = self.store.mark_interrupted(
            "the daemon stopped during the run, or before the run's end was written", now
        )
        if interrupted:
            log.warning(
                "%d run(s) left running by the last daemon are now interrupted", interrupted
            )
        self._plan(self.config.jobs, now, catch_up=True)
        for job in self.config.jobs:
            if job.enabled and job.run_on_start:
                self.trigger(job, "startup")
        for job in self.config.jobs[:STARTUP_LOG_JOBS]:
            fire_job = self.scheduler.by_id.get(job.id)
            when = text(fire_job.next_run) if fire_job else "never (disabled)"
            dry = " (dry run: its calls are logged, not sent)" if job.dry_run else ""
            log.info("job %s (%s): next fire %s%s", job.id, job.label, when, dry)
        if len(self.config.jobs) > STARTUP_LOG_JOBS:
            log.info(
                "... and %d more job(s); `app.py check` lists them all",
                len(self.config.jobs) - STARTUP_LOG_JOBS,
            )

    def apply(self, config: Config) -> ReloadSummary:
        """Apply a new valid config: jobs whose fire grid changed, or that were resumed,
        are scheduled anew; any other change takes effect at the job's next fire."""
        now = self.clock.now()
        old, self.config = self.config, config
        summary = ReloadSummary.between(old.jobs, config.jobs)
        self.redactor.configure(config.secret_values())
        self.monitor.configure(config)
        # A wider for_each needs more pooled connections: new clients (runs keep theirs).
        if config.environments != old.environments or config.calls_at_once() != old.calls_at_once():
            self.executor.retire(self.clients)
            self.clients = ClientPool(
                config.environments,
                self.clock,
                redactor=self.redactor,
                connections=config.calls_at_once(),
                kafka=with_environment(config.settings.kafka, os.environ),
            )
        settings = ("max_workers", "state_db", "durability", "log_file", "log_format", "api")
        for setting in (*settings, "executor"):
            if getattr(config.settings, setting) != getattr(old.settings, setting):
                log.warning(
                    "settings.%s changed; it takes effect when the daemon restarts", setting
                )
        for job_id in summary.removed:
            self._unschedule(job_id)
        replan = []
        for job in config.jobs:
            before, planned = old.job_map.get(job.id), self._planned.get(job.id)
            same_grid = before is not None and grid_of(old, before) == grid_of(config, job)
            if same_grid and job.enabled and planned is not None:  # its next fire stays
                self._planned[job.id] = Planned(job, planned.schedule, planned.anchor)
            else:  # new, a new grid, paused, or resumed (from its next slot, no catch-up)
                replan.append(job)
        self._plan(replan, now, catch_up=False)
        return summary

    def _plan(self, jobs: list[Job], now: datetime, *, catch_up: bool) -> None:
        """Put jobs on the scheduler from their stored states; new grids get a new anchor."""
        states = self.store.job_states()
        plans, new_states = plan_jobs(self.config, jobs, states, now)
        # Another daemon of a shared store may have set a new grid's anchor first: its wins.
        stored = self.store.save_job_states(new_states) if new_states else {}
        for job in jobs:
            self._unschedule(job.id)
            planned = plans.get(job.id)
            if planned is None:  # disabled
                continue
            state = new_states.get(job.id) or states[job.id]
            anchor = stored[job.id].anchor if job.id in stored else state.anchor
            if anchor != planned.anchor:
                planned = Planned(job, planned.schedule, anchor)
            last = state.last_fire if catch_up else None
            try:
                due_at = planned.after(last or now)
            except NeverFiresError as err:
                log.error("job %s is not scheduled: %s", job.id, err)
                continue
            self._planned[job.id] = planned
            self.scheduler.add(job.id, planned, due_at, self._fire)

    def _unschedule(self, job_id: str) -> None:
        fire_job = self.scheduler.by_id.get(job_id)
        if fire_job is not None:
            self.scheduler.cancel_job(fire_job)
        self._planned.pop(job_id, None)
        self.firing.backlog.pop(job_id, None)

    # --- the wake ---------------------------------------------------------------------

    def tick(self, now: datetime) -> float:
        """Claim, decide and hand off every fire due at `now`; seconds until the next wake."""
        self.last_tick = now
        expected, self._planned_wake = self._planned_wake, None
        if expected is not None and (now - expected).total_seconds() > LATE_WAKE_SECONDS:
            log.warning(
                "the loop woke %s late (suspend, stall or clock jump); "
                "missed fires follow the misfire rules",
                seconds_text((now - expected).total_seconds()),
            )
        wake = self._wake = Wake(now)
        try:
            self.scheduler.run_pending()
            for job_id in list(self.firing.backlog):
                planned = self._planned.get(job_id)
                if planned is not None:
                    self.firing.drain(planned.job, wake)
        finally:
            self._wake = None
        if wake.claims and not self._commit(wake, now):
            return self._planned_for(CLAIM_RETRY_SECONDS)
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            self._prune(now)
        idle = self.scheduler.idle_seconds
        return self._planned_for(MAX_WAIT_SECONDS if idle is None else idle)

    def _planned_for(self, wait: float) -> float:
        wait = min(max(wait, 0.0), MAX_WAIT_SECONDS)
        self._planned_wake = self.clock.now() + timedelta(seconds=wait)
        return wait

    def _on_fire(self, fire_job: FireJob) -> None:
        """The scheduler's callback for a due job, on the loop thread: decide only."""
        wake = self._wake
        planned = self._planned.get(fire_job.job_id)
        if wake is None or planned is None:
            self.scheduler.cancel_job(fire_job)
            return
        wake.moved.append((fire_job, fire_job.next_run))
        self.firing.decide(planned, fire_job, wake)

    def _commit(self, wake: Wake, now: datetime) -> bool:
        """Claim the wake's fires; hand off what was claimed, or undo the whole wake."""
        try:
            claimed = self.store.claim(wake.claims)
        except StoreError as err:
            self._undo(wake)
            self._store_failed(now, err)
            return False
        if self.store_failing is not None:
            since, _ = self.store_failing
            log.warning("the state database is writable again (failing since %s)", text(since))
            self.store_failing = self._reported_at = None
        for claim, job, (level, line), answer in zip(
            wake.claims, wake.starts, wake.lines, claimed, strict=True
        ):
            if answer == "taken":
                # With a shared store, the daemon that claimed it first runs it: as planned.
                log.log(
                    logging.DEBUG if self.store.shared else logging.WARNING,
                    "job %s: the fire at %s was already handled; not run twice",
                    claim.job_id,
                    text(claim.scheduled_for or now),
                )
                if job is not None:
                    self.executor.release(job.id)
            elif answer == "full" and job is not None:
                self.executor.release(job.id)
                assert claim.when_full is not None  # a full answer wrote it
                full = claim.when_full
                at = text(claim.scheduled_for or now)
                line = f"job {claim.job_id}: fire at {at} skipped: {full.reason}"
                self._skipped(claim.job_id, full, logging.INFO, line)
            elif job is not None:
                self.store.save_later(claim.record)  # the run's start
                self.executor.submit(job, self.config, self.clients, claim.record)
            else:
                self._skipped(claim.job_id, claim.record, level, line)
        return True

    def _skipped(self, job_id: str, record: RunResult, level: int, line: str) -> None:
        """Record, log and tell of a fire that will not run."""
        self.store.save_later(record)
        log.log(level, "%s", line)
        self.on_skipped(record)
        skipped_job = self.config.job_map.get(job_id)
        if skipped_job is not None:
            self.monitor.after_skip(skipped_job, record)

    def _undo(self, wake: Wake) -> None:
        for fire_job, previous in reversed(wake.moved):
            self.scheduler.reschedule(fire_job, previous)
        self.firing.undo(wake)

    def _store_failed(self, now: datetime, err: StoreError) -> None:
        if self.store_failing is None:
            self.store_failing = (now, str(err))
            self.monitor.daemon_alert(
                f"the state database cannot be written ({err.cause}); no fire runs until it can"
            )
        since = self.store_failing[0]
        self.store_failing = (since, str(err))
        if self._reported_at is None or now - self._reported_at >= REPORT_EVERY:
            self._reported_at = now
            pending = sorted({fire_job.job_id for fire_job in self.scheduler.due_jobs(now)})
            line = (
                f"the state database cannot be written since {text(since)} ({err.cause}); "
                f"{len(pending)} job(s) have fires pending, none is run unclaimed: "
                f"{', '.join(pending[:10])}{' …' if len(pending) > 10 else ''}"
            )
            log.error("%s", line)
            self.report(line)  # the log may be on that disk

    def _prune(self, now: datetime) -> None:
        settings = self.config.settings
        try:
            deleted = self.store.prune(
                settings.history_max_age_days, settings.history_max_runs_per_job, now
            )
        except StoreError as err:
            log.error("history: pruning failed (%s); tried again in an hour", err)
            return
        if deleted:
            log.info("history: pruned %d old run(s)", deleted)

    # --- runs -------------------------------------------------------------------------

    def trigger(self, job: Job, trigger: Trigger = "manual") -> str | None:
        """Start an unscheduled run (manual, startup) now; its run id, or None when
        max_instances is full. Raises StoreError when its record cannot be written and
        RuntimeError when the pool is shut down."""
        if not self.executor.is_alive():
            raise RuntimeError("the worker pool is shut down")
        if self.executor.reserve(job) is not None:
            return None
        record = started_result(job.id, trigger=trigger, started_at=self.clock.now())
        room = job.max_instances - self.executor.running(job.id)
        try:
            [answer] = self.store.claim([Claim(job.id, None, record, room)])
        except StoreError:
            self.executor.release(job.id)
            raise
        if answer != "claimed":  # other daemons run as many as max_instances allows
            self.executor.release(job.id)
            return None
        self.executor.submit(job, self.config, self.clients, record)
        return record.run_id

    def _run_ended(self, job_id: str) -> None:
        if job_id in self.firing.backlog:
            self.clock.wake()  # a slot is free: the loop starts the next waiting fire

    # --- state for the loop, the API and shutdown ---------------------------------------

    def inflight(self) -> int:
        return self.executor.inflight()

    def running(self, job_id: str) -> int:
        """Runs of this job going on now."""
        return self.executor.running(job_id)

    def stop(self, grace_seconds: float) -> int:
        """Stop firing; let runs finish up to the grace period; mark the rest interrupted.

        Returns how many runs were still going when the grace period ended.
        """
        self.is_stopping = True
        self.scheduler.clear()
        left = self.executor.stop(grace_seconds)
        self.monitor.close()  # queued alerts and pings, a few seconds at most
        self.store.flush()
        if left:
            self.store.mark_interrupted("the daemon was stopped during the run", self.clock.now())
        self.clients.close()
        return left

    def health(self, now: datetime) -> tuple[str, str | None]:
        """("healthy" | "unhealthy" | "stopping", why not healthy), as GET /health says."""
        if self.is_stopping:
            return "stopping", "the daemon is stopping: no new fires; runs are finishing"
        if not self.executor.is_alive():
            return "unhealthy", "the worker pool is shut down"
        age = (now - self.last_tick).total_seconds()
        if age > STALL_SECONDS:
            return "unhealthy", f"the scheduler loop has not run for {seconds_text(round(age))}"
        if self.store_failing is not None:
            since, why = self.store_failing
            return (
                "unhealthy",
                f"the state database cannot be written since {text(since)}: {why}",
            )
        failing = self.store.failing()
        if failing is not None:
            return "unhealthy", f"the state database: {failing}"
        return "healthy", None

    def count_reload(self, applied: bool, problems: Sequence[str] = ()) -> None:
        """Note a reload's outcome, for /status, /health and /metrics: a refused one keeps
        the file's problems (and since when it has been invalid) until a save applies."""
        self.reloads["applied" if applied else "failed"] += 1
        if applied:
            self.config_invalid = None
        else:
            if self.config_invalid is None:
                first = problems[0] if problems else "it cannot be read"
                self.monitor.daemon_alert(
                    f"the config file is invalid ({first}); the last good config runs on"
                )
            since = self.config_invalid[0] if self.config_invalid else self.clock.now()
            self.config_invalid = (since, tuple(problems))
