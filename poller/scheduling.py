"""The bridge to `schedule`: the only code that touches schedule.Scheduler and schedule.Job.

The loop is schedule's: jobs registered on a Scheduler, `run_pending()` on each wake,
`idle_seconds` for how long to sleep, `cancel_job`, `clear`. Kept from the library:
Scheduler.jobs (the registry), `_run_job` (calls Job.run), `cancel_job`, Job's fields.
Replaced, and why: schedule plans runs itself and compares naive local `datetime.now()`
values, which drifts (the next run counts from when the last one finished) and misfires
in a repeated DST hour. So here `Job.next_run` holds an aware UTC instant from a plan
(`timing.next_fire`: nominal, never from when a run finished), the Scheduler reads an
injected Clock and keeps its jobs in a heap by due instant, so a wake costs O(log n) per
due job instead of a scan of every job. What of schedule reads naive times
(`Job.should_run`, `Scheduler.get_next_run`) is never reached.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import datetime

import schedule

from poller.clock import Clock
from poller.timeformat import text

Plan = Callable[[datetime], datetime]
_NO_TAGS: frozenset[object] = frozenset()


class FireJob(schedule.Job):
    """A schedule.Job whose `next_run` (aware UTC) comes from a plan: next fire after an instant.

    `fire(job)` is called on the loop thread when it is due; it only decides, and may set
    `upcoming` (the due instant after this one) when it already computed it.
    """

    def __init__(
        self,
        scheduler: HeapScheduler,
        job_id: str,
        plan: Plan,
        next_run: datetime,
        fire: Callable[[FireJob], None],
    ) -> None:
        super().__init__(1, scheduler)  # job_func stays None: run() calls `fire`
        self.unit = "seconds"
        self.tags = _NO_TAGS  # type: ignore[assignment]  # an empty set per job costs 216 bytes
        self.job_id = job_id
        self.plan = plan
        self.next_run: datetime = next_run
        self.upcoming: datetime | None = None
        self.is_active = True
        self.fire = fire

    def run(self) -> None:
        """Fire, then move to the next fire: schedule.Job.run without what it adds here.

        That is an `until` deadline (never set), a call through job_func, and two naive
        clock reads (the loop's clock is the one that counts), which cost more than the
        fire itself at 1,000 fires/s.
        """
        self.fire(self)
        upcoming, self.upcoming = self.upcoming, None
        self.next_run = upcoming if upcoming is not None else self.plan(self.next_run)

    def __repr__(self) -> str:
        return f"FireJob({self.job_id!r}, next_run={text(self.next_run)})"


class HeapScheduler(schedule.Scheduler):
    """A schedule.Scheduler that reads a Clock and keeps its jobs in due order."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        # (due, job id, job): ties fire in id order; the id is the job's own string.
        self._heap: list[tuple[datetime, str, FireJob]] = []
        self.by_id: dict[str, FireJob] = {}

    def add(
        self, job_id: str, plan: Plan, due_at: datetime, fire: Callable[[FireJob], None]
    ) -> FireJob:
        """Schedule a job to fire at `due_at`, then at each `plan(previous)`."""
        old = self.by_id.get(job_id)
        if old is not None:
            self.cancel_job(old)
        job = FireJob(self, job_id, plan, due_at, fire)
        self.jobs.append(job)
        self.by_id[job_id] = job
        heapq.heappush(self._heap, (due_at, job_id, job))
        return job

    def reschedule(self, job: FireJob, due_at: datetime) -> None:
        """Make an active job due at `due_at` again (a wake whose claims failed)."""
        if job.is_active:
            job.next_run = due_at
            heapq.heappush(self._heap, (due_at, job.job_id, job))

    def cancel_job(self, job: schedule.Job) -> None:
        super().cancel_job(job)
        if isinstance(job, FireJob):
            job.is_active = False
            if self.by_id.get(job.job_id) is job:
                del self.by_id[job.job_id]

    def clear(self, tag: object = None) -> None:
        for job in list(self.jobs):
            self.cancel_job(job)
        self._heap.clear()

    def run_pending(self) -> None:
        """Fire every job due now, earliest first; each fire only hands off."""
        now = self.clock.now()
        while self._heap and self._heap[0][0] <= now:
            due_at, _, job = heapq.heappop(self._heap)
            if not job.is_active or job.next_run != due_at:
                continue  # cancelled or rescheduled since it was pushed
            self._run_job(job)
            if job.is_active:
                heapq.heappush(self._heap, (job.next_run, job.job_id, job))

    def next_due(self) -> datetime | None:
        """The earliest due instant of any active job (aware UTC)."""
        while self._heap:
            due_at, _, job = self._heap[0]
            if job.is_active and job.next_run == due_at:
                return due_at
            heapq.heappop(self._heap)
        return None

    def due_jobs(self, now: datetime) -> list[FireJob]:
        """The active jobs due at `now` (for reports; nothing fires)."""
        return [job for job in self.by_id.values() if job.next_run <= now]

    @property
    def idle_seconds(self) -> float | None:
        due = self.next_due()
        return None if due is None else (due - self.clock.now()).total_seconds()
