"""Cron fire times at every DST transition 2000-2040 of six zones, against a reference built
minute by minute with croniter's matcher (SPEC §5, Debian cron's rule).

The reference reads no fire times from any scheduler: it walks every UTC minute around each
transition, turns it into the zone's wall time with zoneinfo, and asks `croniter.match`
whether that wall time matches. A wall-clock job fires at exactly those minutes. A fixed-time
job fires once per matching wall time: at its first occurrence, or at the transition when the
wall time falls in the gap. croniter's iterator is not used: at DST it skips or repeats fires.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from poller.config.models import Schedule
from poller.timing import fires_between

ZONES = [
    "Australia/Lord_Howe",  # 30-minute shifts at 02:00
    "Europe/London",
    "America/New_York",
    "America/Santiago",  # shifts at midnight: the repeated hour spans two dates
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Tehran",  # +03:30 / +04:30 until 2022
]
WALL_CLOCK = [
    "30 * * * *",
    "*/30 * * * *",
    "30 */2 * * *",
    "*/15 * * * *",
    "0 * * * *",
    "0 */2 * * *",
    "15 */5 * * *",
    "* 1 * * *",
    "*/7 * * * 0",
    "45,59 * * * *",
]
FIXED_TIME = ["30 2 * * *", "15 1 * * *", "0 0 * * *", "45 23 * * *", "0,30 1-3 * * *"]
WINDOW = timedelta(hours=6)  # each side of a transition; wall times repeat for at most 1 h
COMPARED = timedelta(hours=4)  # fixed-time fires compared here, so a first copy is in view
MINUTE = timedelta(minutes=1)


def transitions(zone: ZoneInfo) -> list[datetime]:
    """Every instant in 2000-2040 at which the zone's UTC offset changes (whole seconds)."""
    found = []
    day = datetime(2000, 1, 1, tzinfo=UTC)
    while day.year < 2041:
        following = day + timedelta(days=1)
        if day.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            low, high = day, following
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(high.replace(microsecond=0))
        day = following
    return found


@cache
def matches(expr: str, weekday: int, hour: int, minute: int) -> bool:
    # The expressions' day-of-month and month fields are "*", so a wall time's weekday, hour
    # and minute decide; 2001-01-01 was a Monday.
    return bool(croniter.match(expr, datetime(2001, 1, 1 + weekday, hour, minute)))


def walls(zone: ZoneInfo, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """(instant, naive wall time) for every UTC minute in (start, end]."""
    instant = start + MINUTE
    while instant <= end:
        yield instant, instant.astimezone(zone).replace(tzinfo=None)
        instant += MINUTE


def wall_clock_reference(expr: str, zone: ZoneInfo, start: datetime, end: datetime) -> list:
    return [
        instant
        for instant, wall in walls(zone, start, end)
        if matches(expr, wall.weekday(), wall.hour, wall.minute)
    ]


def fixed_time_reference(expr: str, zone: ZoneInfo, start: datetime, end: datetime) -> list:
    fires: dict[datetime, datetime] = {}
    previous: datetime | None = None
    for instant, wall in walls(zone, start, end):
        if previous is not None and wall - previous > MINUTE:  # the clock skipped (previous, wall)
            skipped = previous + MINUTE
            while skipped < wall:
                if matches(expr, skipped.weekday(), skipped.hour, skipped.minute):
                    fires.setdefault(skipped, instant)
                skipped += MINUTE
        if matches(expr, wall.weekday(), wall.hour, wall.minute):
            fires.setdefault(wall, instant)
        previous = wall
    return sorted(set(fires.values()))


def zone_cases() -> list[tuple[str, datetime]]:
    return [(name, at) for name in ZONES for at in transitions(ZoneInfo(name))]


CASES = zone_cases()


def test_every_zone_has_its_transitions() -> None:
    counts = {name: sum(1 for zone, _ in CASES if zone == name) for name in ZONES}
    # Tehran kept DST 2000-2005 and 2008-2022; the others every year of the 41.
    assert counts["Asia/Tehran"] == 2 * (6 + 15)
    assert all(counts[name] >= 2 * 40 for name in ZONES if name != "Asia/Tehran"), counts


@pytest.mark.parametrize("expr", WALL_CLOCK)
def test_wall_clock_cron_fires_at_every_matching_minute(expr: str) -> None:
    disagreements = []
    for name, at in CASES:
        zone = ZoneInfo(name)
        start, end = at - WINDOW, at + WINDOW
        ours = fires_between(Schedule(timezone=name, cron=expr), start, end)
        theirs = wall_clock_reference(expr, zone, start, end)
        if ours != theirs:
            disagreements.append((name, at.isoformat(), sorted(set(ours) ^ set(theirs))[:4]))
    assert disagreements == []


@pytest.mark.parametrize("expr", FIXED_TIME)
def test_fixed_time_cron_keeps_gap_and_fold_rules(expr: str) -> None:
    disagreements = []
    for name, at in CASES:
        zone = ZoneInfo(name)
        start, end = at - WINDOW, at + WINDOW
        ours = [
            fire
            for fire in fires_between(Schedule(timezone=name, cron=expr), start, end)
            if abs(fire - at) <= COMPARED
        ]
        theirs = [
            fire
            for fire in fixed_time_reference(expr, zone, start, end)
            if abs(fire - at) <= COMPARED
        ]
        if ours != theirs:
            disagreements.append((name, at.isoformat(), sorted(set(ours) ^ set(theirs))[:4]))
    assert disagreements == []
