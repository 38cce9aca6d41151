"""What `app.py check` and `app.py jobs` report: each job's schedule in words and its next
fire times, counted as the daemon counts them.

Pure over a Config, an instant and the stored anchors: an `every` job's fires count from the
anchor the daemon keeps for its grid (poller.plans), or from the instant itself when it has
none yet, as a daemon starting then would. A paused (disabled) job has no next fires.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from poller.config.models import Config, Job
from poller.plans import grid_of
from poller.store import JobState
from poller.timeformat import text
from poller.timing import NeverFiresError, blackout_reason, describe, next_fire, zone_of


@dataclass(frozen=True, slots=True)
class JobForecast:
    job: Job
    timezone: str
    schedule: str
    next_fires: tuple[datetime, ...]
    blackouts: tuple[str | None, ...]
    counted_from: datetime | None  # an `every` job's anchor
    anchor_stored: bool  # counted_from is the daemon's stored anchor, not the instant asked

    @property
    def paused(self) -> bool:
        return not self.job.enabled

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.job.id,
            "label": self.job.label,
            "enabled": self.job.enabled,
            "paused": self.paused,
            "dry_run": self.job.dry_run,
            "timezone": self.timezone,
            "schedule": self.schedule,
            "next_fires": [text(fire) for fire in self.next_fires],
            "blackouts": [
                {"at": text(fire), "reason": reason}
                for fire, reason in zip(self.next_fires, self.blackouts, strict=True)
                if reason
            ],
            "counted_from": None if self.counted_from is None else text(self.counted_from),
            "anchor": None if self.counted_from is None else self.anchor_source,
        }

    @property
    def anchor_source(self) -> str:
        return "stored" if self.anchor_stored else "now"


def forecast(
    config: Config,
    after: datetime,
    count: int = 3,
    anchors: Mapping[str, JobState] | None = None,
) -> list[JobForecast]:
    """Every job's next `count` fires after `after`, in the job's own zone.

    `anchors` are the store's job_anchors(); a job's anchor counts only while its grid is
    the one it was saved for (or unknown: kept by an older Poller), as in plans.plan_jobs.
    """
    anchors = anchors or {}
    whole_second = after.replace(microsecond=0)  # as the daemon anchors: whole seconds
    result = []
    for job in config.jobs:
        schedule = config.schedule(job)
        zone = zone_of(schedule)
        state = anchors.get(job.id)
        stored = state is not None and state.grid in (None, grid_of(config, job))
        anchor = state.anchor if state is not None and stored else whole_second
        fires: list[datetime] = []
        instant = after
        for _ in range(count if job.enabled else 0):
            try:
                instant = next_fire(schedule, instant, anchor=anchor)
            except NeverFiresError:
                break
            fires.append(instant.astimezone(zone))
        is_every = schedule.every_seconds is not None
        result.append(
            JobForecast(
                job=job,
                timezone=zone.key,
                schedule=describe(schedule),
                next_fires=tuple(fires),
                blackouts=tuple(blackout_reason(job, fire, zone) for fire in fires),
                counted_from=anchor.astimezone(zone) if is_every else None,
                anchor_stored=stored and is_every,
            )
        )
    return result
