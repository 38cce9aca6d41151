"""What `app.py check` reports: each job's schedule in words and its next fire times.

Pure over a Config and an instant; the API and the page will reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from poller.config.models import Config, Job
from poller.timeformat import text
from poller.timing import NeverFiresError, blackout_reason, describe, next_fire, zone_of


@dataclass(frozen=True, slots=True)
class JobForecast:
    job: Job
    timezone: str
    schedule: str
    next_fires: tuple[datetime, ...]
    blackouts: tuple[str | None, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.job.id,
            "label": self.job.label,
            "enabled": self.job.enabled,
            "timezone": self.timezone,
            "schedule": self.schedule,
            "next_fires": [text(fire) for fire in self.next_fires],
            "blackouts": [
                {"at": text(fire), "reason": reason}
                for fire, reason in zip(self.next_fires, self.blackouts, strict=True)
                if reason
            ],
        }


def forecast(config: Config, after: datetime, count: int = 3) -> list[JobForecast]:
    """Every job's next `count` fires after `after`, in the job's own zone."""
    result = []
    for job in config.jobs:
        schedule = config.schedule(job)
        zone = zone_of(schedule)
        fires: list[datetime] = []
        instant = after
        anchor = after.replace(microsecond=0)  # as the daemon does: whole seconds
        for _ in range(count):
            try:
                instant = next_fire(schedule, instant, anchor=anchor)
            except NeverFiresError:
                break
            fires.append(instant.astimezone(zone))
        result.append(
            JobForecast(
                job=job,
                timezone=zone.key,
                schedule=describe(schedule),
                next_fires=tuple(fires),
                blackouts=tuple(blackout_reason(job, fire, zone) for fire in fires),
            )
        )
    return result
