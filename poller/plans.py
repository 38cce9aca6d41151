"""What the daemon schedules for each job: its fire grid's fingerprint, anchor and plan.

The grid (`time`, `every`, `cron`, `days` and the zone) decides when a job fires and so
its anchor; every other field (label, chain, input, blackouts, coalesce, grace) can change
without moving a fire. Pure functions over a Config and the stored job states.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from datetime import datetime

from poller.config.models import Config, Job, Schedule
from poller.store import JobState
from poller.timing import next_fire


def grid_of(config: Config, job: Job) -> str:
    """A fingerprint of when a job fires; a new one gives the job a new anchor."""
    schedule = config.schedule(job)
    grid = (
        schedule.timezone,
        schedule.times,
        sorted(schedule.days) if schedule.days is not None else None,
        schedule.every_seconds,
        schedule.cron,
    )
    return hashlib.sha256(repr(grid).encode()).hexdigest()[:16]


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


def plan_jobs(
    config: Config, jobs: Sequence[Job], states: dict[str, JobState], now: datetime
) -> tuple[dict[str, Planned], dict[str, JobState]]:
    """Plans of the enabled `jobs`, and the states to save.

    A job seen for the first time, or whose grid changed, gets a new state: anchored at
    `now` in whole seconds (readable fire times; one anchor shared by the jobs of one start
    or reload) and without a last fire. A state kept without a grid (by an older Poller)
    keeps its anchor and last fire, and learns its grid.
    """
    anchor = now.replace(microsecond=0)
    plans: dict[str, Planned] = {}
    to_save: dict[str, JobState] = {}
    for job in jobs:
        grid = grid_of(config, job)
        state = states.get(job.id)
        if state is None or (state.grid is not None and state.grid != grid):
            state = to_save[job.id] = JobState(grid, anchor, last_fire=None)
        elif state.grid is None:
            state = to_save[job.id] = dataclasses.replace(state, grid=grid)
        if job.enabled:
            plans[job.id] = Planned(job, config.schedule(job), state.anchor)
    return plans, to_save


@dataclasses.dataclass(frozen=True, slots=True)
class ReloadSummary:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: int

    @classmethod
    def between(cls, old: Sequence[Job], new: Sequence[Job]) -> ReloadSummary:
        before = {job.id: job for job in old}
        after = {job.id: job for job in new}
        added = tuple(job_id for job_id in after if job_id not in before)
        changed = tuple(
            job_id for job_id in after if job_id in before and before[job_id] != after[job_id]
        )
        removed = tuple(job_id for job_id in before if job_id not in after)
        return cls(added, changed, removed, len(after) - len(added) - len(changed))

    def __str__(self) -> str:
        def names(ids: tuple[str, ...]) -> str:
            return ", ".join(ids) if ids else "none"

        return (
            f"added {names(self.added)}; changed {names(self.changed)}; "
            f"removed {names(self.removed)}; {self.unchanged} unchanged"
        )
