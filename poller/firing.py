"""What due fires become: a run, a place in a catch-up backlog, or a skipped record.

The rules of SPEC §5 and README's catch-up section, applied on the loop thread to one wake
at a time: a fire within ON_TIME_SECONDS runs as `schedule`; later fires are `catch-up`;
fires more than the job's misfire grace late are one skipped record, as are fires coalesced
into the latest; a job that does not coalesce keeps its missed fires in a backlog that runs
one after another (as max_instances allows); a full max_instances skips the fire. Nothing
here writes: decisions gather in a Wake, which the daemon commits or undoes as a whole.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from poller.config.models import Job
from poller.executors.slots import Executor
from poller.plans import Planned
from poller.run.results import Trigger, new_run_id, skipped_result, started_result
from poller.scheduling import FireJob
from poller.store import Claim
from poller.timeformat import seconds_text, text
from poller.timing import fires_between

MAX_CATCH_UP_RUNS = 100
"""When not coalescing, at most this many missed fires of a job wait to run after downtime."""
CATCH_UP_SCAN_LIMIT = 10_000
"""Missed fires counted one by one; past this many the rest are skipped as one misfire."""
ON_TIME_SECONDS = 1.0
"""A single fire handed off within this lateness counts as `schedule`, later as `catch-up`;
it is never a misfire, even with `misfire_grace_seconds: 0` (a wake is a few ms late)."""


@dataclass(slots=True)
class Wake:
    """What one tick decided, kept apart until its claims are committed."""

    now: datetime
    claims: list[Claim] = field(default_factory=list)
    starts: list[Job | None] = field(default_factory=list)  # per claim: the job it starts
    lines: list[tuple[int, str]] = field(default_factory=list)  # per claim: its log line
    moved: list[tuple[FireJob, datetime]] = field(default_factory=list)  # job, previous due
    backlogs: dict[str, list[datetime]] = field(default_factory=dict)  # before this wake


class Firing:
    """The decisions of each wake, and the backlogs of catch-up fires they leave."""

    def __init__(self, executor: Executor, *, shared: bool = False) -> None:
        """`shared`: other daemons run this config's jobs too (a shared store), so each run's
        claim says how many of its job they may have going."""
        self.executor = executor
        self.shared = shared
        self.backlog: dict[str, deque[datetime]] = {}  # job id -> fires waiting for a slot

    def decide(self, planned: Planned, fire_job: FireJob, wake: Wake) -> None:
        """What a due job's fires become; sets `fire_job.upcoming`."""
        now = wake.now
        job, due = planned.job, fire_job.next_run
        upcoming = planned.after(due)
        fires = [due]
        if upcoming > now:  # one fire is due: the usual case
            fire_job.upcoming = upcoming
            late = (now - due).total_seconds()
            if late <= ON_TIME_SECONDS:  # on time, whatever the grace (0 included)
                self._start_or_skip(job, due, "schedule", now, wake)
                return
        grace = timedelta(seconds=max(job.misfire_grace_seconds, ON_TIME_SECONDS))
        is_counted = True
        if upcoming <= now:
            schedule, anchor = planned.schedule, planned.anchor
            fires += fires_between(schedule, due, now, anchor, limit=CATCH_UP_SCAN_LIMIT)
            if len(fires) > CATCH_UP_SCAN_LIMIT:
                # Too many to count (a long downtime of a frequent job): the last missed fire
                # is found directly, and the fires in the grace window after it scanned, so
                # the next fire stays on the grid and a recent one still runs.
                last_missed = _last_fire_by(planned, fires, now - grace)
                if last_missed > fires[-1]:
                    fires.append(last_missed)
                    is_counted = False
                fires += fires_between(schedule, fires[-1], now, anchor, limit=CATCH_UP_SCAN_LIMIT)
            fire_job.upcoming = planned.after(fires[-1])
        missed = [f for f in fires if now - f > grace]
        in_time = fires[len(missed) :]
        trigger: Trigger = "catch-up"
        if missed:
            why = f"misfire, more than {seconds_text(job.misfire_grace_seconds)} late"
            self._skip(job, missed, why, trigger, now, wake, logging.WARNING, is_counted=is_counted)
        keep = 1 if job.coalesce else MAX_CATCH_UP_RUNS
        if len(in_time) > keep:
            why = (
                f"coalesced with the fire at {text(in_time[-1])}"
                if job.coalesce
                else f"over the catch-up limit of {MAX_CATCH_UP_RUNS}"
            )
            self._skip(job, in_time[:-keep], why, trigger, now, wake, logging.INFO)
            in_time = in_time[-keep:]
        for scheduled_for in in_time:
            self._start_or_skip(job, scheduled_for, trigger, now, wake)

    def _start_or_skip(
        self, job: Job, scheduled_for: datetime, trigger: Trigger, now: datetime, wake: Wake
    ) -> None:
        """Start the fire if max_instances allows, else skip it; a fire of a job that does
        not coalesce waits in its backlog behind earlier catch-up fires instead."""
        backlog = self.backlog.get(job.id)
        if not job.coalesce and (backlog or (trigger == "catch-up" and self.executor.is_full(job))):
            if backlog is None:
                backlog = self.backlog[job.id] = deque()
            wake.backlogs.setdefault(job.id, list(backlog))
            if len(backlog) < MAX_CATCH_UP_RUNS:
                backlog.append(scheduled_for)
            else:
                why = f"over the catch-up limit of {MAX_CATCH_UP_RUNS} waiting fires"
                self._skip(job, [scheduled_for], why, trigger, now, wake, logging.INFO)
            return
        self._start(job, scheduled_for, trigger, now, wake)

    def _start(
        self, job: Job, scheduled_for: datetime, trigger: Trigger, now: datetime, wake: Wake
    ) -> None:
        running = self.executor.reserve(job)  # now, so a later fire of this wake sees it
        if running is not None:
            why = f"already running ({running} of max_instances {job.max_instances})"
            self._skip(job, [scheduled_for], why, trigger, now, wake, logging.INFO, series=False)
            return
        record = started_result(
            job.id,
            trigger=trigger,
            started_at=now,
            scheduled_for=scheduled_for,
            run_id=new_run_id(),
        )
        room = when_full = None
        if self.shared:
            room = job.max_instances - self.executor.running(job.id)
            why = f"already running on other daemons (max_instances {job.max_instances})"
            when_full = skipped_result(
                job.id,
                why,
                trigger=trigger,
                at=now,
                scheduled_for=scheduled_for,
                run_id=record.run_id,
            )
        wake.claims.append(Claim(job.id, scheduled_for, record, room, when_full))
        wake.starts.append(job)
        wake.lines.append((logging.NOTSET, ""))

    def drain(self, job: Job, wake: Wake) -> None:
        """Start a job's waiting catch-up fires, oldest first, while max_instances allows."""
        backlog = self.backlog[job.id]
        wake.backlogs.setdefault(job.id, list(backlog))
        while backlog and not self.executor.is_full(job):
            self._start(job, backlog.popleft(), "catch-up", wake.now, wake)
        if not backlog:
            del self.backlog[job.id]

    def undo(self, wake: Wake) -> None:
        """Put the backlogs back as they were before the wake, and give back its slots."""
        for job_id, backlog in wake.backlogs.items():
            if backlog:
                self.backlog[job_id] = deque(backlog)
            else:
                self.backlog.pop(job_id, None)
        for job in wake.starts:
            if job is not None:
                self.executor.release(job.id)

    def _skip(
        self,
        job: Job,
        fires: list[datetime],
        why: str,
        trigger: Trigger,
        now: datetime,
        wake: Wake,
        level: int,
        *,
        series: bool = True,
        is_counted: bool = True,
    ) -> None:
        """One skipped record (and log line) for a series of fires that will not run;
        `is_counted` False: more fires than CATCH_UP_SCAN_LIMIT lie between its ends."""
        reason = why
        if series:
            span = f"{text(fires[0])} to {text(fires[-1])}"
            count = len(fires) if is_counted else f"more than {CATCH_UP_SCAN_LIMIT}"
            reason = f"{why}: {count} fire(s) from {span}"
        record = skipped_result(job.id, reason, trigger=trigger, at=now, scheduled_for=fires[-1])
        wake.claims.append(Claim(job.id, fires[-1], record))
        wake.starts.append(None)
        if series:
            wake.lines.append((level, f"job {job.id}: {reason}"))
        else:
            wake.lines.append((level, f"job {job.id}: fire at {text(fires[-1])} skipped: {reason}"))


def _last_fire_by(planned: Planned, counted: list[datetime], until: datetime) -> datetime:
    """The job's last fire at or before `until` (at or after counted[-1]), found from `until`
    backwards instead of counting every fire on the way."""
    span = max(counted[-1] - counted[-2], timedelta(seconds=1))
    probe = planned.after(until - span)
    while probe > until and until - span > counted[-1]:
        span *= 2
        probe = planned.after(until - span)
    last = probe if probe <= until else counted[-1]
    while (following := planned.after(last)) <= until:
        last = following
    return last
