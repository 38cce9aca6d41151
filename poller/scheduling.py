"""The bridge to `schedule`: the only code that touches schedule.Scheduler and Job.next_run.

`schedule` plans runs itself and compares naive local `datetime.now()` values, which
drifts (the next run counts from when the last one finished) and misfires in a repeated
DST hour. So each job here gets its fire instants from `timing.next_fire` (aware UTC,
nominal, never from when a run finished), and the scheduler keeps jobs in a heap by due
instant, so a wake costs O(log n) for each due job instead of a scan of every job.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable
from datetime import datetime

import schedule

from poller.clock import Clock

Plan = Callable[[datetime], datetime]
_NO_TAGS: frozenset[object] = frozenset()


class FireJob(schedule.Job):
    """A schedule.Job whose `due_at` (aware UTC) comes from a plan: next fire after an instant.

    `fire(job)` is called on the loop thread when it is due; it may move `due_at` forward
    (catch-up handles several missed fires at once) and must only hand the fire off.
    """

    def __init__(
        self,
        scheduler: HeapScheduler,
        job_id: str,
        plan: Plan,
        due_at: datetime,
        fire: Callable[[FireJob], None],
    ) -> None:
        super().__init__(1, scheduler)
        self.unit = "seconds"
        self.tags = _NO_TAGS  # type: ignore[assignment]  # an empty set per job costs 216 bytes
        self.job_id = job_id
        self.plan = plan
        self.due_at = due_at
        self.upcoming: datetime | None = None  # plan(due_at), when the fire already knew it
        self.is_active = True
        self.fire = fire

    # schedule.Job keeps these two as attributes; here they derive from `due_at` and `fire`
    # (10,000 jobs would otherwise hold 10,000 extra datetimes and partials).

    @property  # type: ignore[override]
    def job_func(self) -> Callable[[], None]:
        """What schedule.Job.run calls: the fire callback, given this job."""
        return functools.partial(self.fire, self)

    @job_func.setter
    def job_func(self, value: object) -> None:
        """schedule.Job.__init__ sets it to None; the callback is `fire`."""

    @property
    def next_run(self) -> datetime:
        """schedule's own view (repr, get_next_run): naive local time of `due_at`."""
        return self.due_at.astimezone().replace(tzinfo=None)

    @next_run.setter
    def next_run(self, value: object) -> None:
        """schedule.Job.__init__ sets it to None; the due time is `due_at`."""

    @property
    def should_run(self) -> bool:
        assert isinstance(self.scheduler, HeapScheduler)
        return self.due_at <= self.scheduler.clock.now()

    def run(self) -> None:
        """Fire, then move to the next fire: schedule.Job.run without what it adds here.

        That is an `until` deadline (never set) and two naive clock reads (the loop's clock
        is the one that counts), which cost more than the fire itself at 1,000 fires/s.
        """
        self.fire(self)
        self._schedule_next_run()

    def _schedule_next_run(self) -> None:
        upcoming, self.upcoming = self.upcoming, None
        self.due_at = upcoming if upcoming is not None else self.plan(self.due_at)

    def __repr__(self) -> str:
        return f"FireJob({self.job_id!r}, due_at={self.due_at.isoformat()})"


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
        heapq.heappush(self._heap, (job.due_at, job.job_id, job))
        return job

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
            if not job.is_active or job.due_at != due_at:
                continue  # cancelled or rescheduled since it was pushed
            self._run_job(job)
            if job.is_active:
                heapq.heappush(self._heap, (job.due_at, job.job_id, job))

    def next_due(self) -> datetime | None:
        """The earliest due instant of any active job (aware UTC)."""
        while self._heap:
            due_at, _, job = self._heap[0]
            if job.is_active and job.due_at == due_at:
                return due_at
            heapq.heappop(self._heap)
        return None

    @property
    def idle_seconds(self) -> float | None:
        due = self.next_due()
        return None if due is None else (due - self.clock.now()).total_seconds()
