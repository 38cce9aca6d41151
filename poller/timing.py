"""The one truth of fire times (SPEC §5): next_fire, fires_between, blackouts, descriptions.

Pure: it never reads a clock, every instant is passed in; it returns aware UTC datetimes and
uses the job's zone only inside. It does not decide misfires or catch-up policy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from poller.config.models import WEEKDAY_NAMES, Job, Schedule
from poller.errors import PollerError
from poller.timeformat import clock_text, format_duration, text

LOCALTIME = Path("/etc/localtime")
SINGLE_RANGE_RE = re.compile(r"(?<!\d)(\d+)-(\d+)(?:/\d+)?(?!\d)")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# An `every` job whose fires keep missing its `days` (e.g. every 7d anchored on a Tuesday but
# only on Mondays) never fires; after this many skipped fires we say so instead of looping.
EVERY_DAYS_MAX_SKIPS = 1000


class NeverFiresError(PollerError):
    """A schedule that has no fire after the given instant."""

    def __init__(self, schedule: str, after: datetime, reason: str) -> None:
        self.schedule = schedule
        self.after = after
        self.reason = reason
        super().__init__(f"{schedule} never fires after {text(after)}: {reason}")


def local_zone() -> ZoneInfo:
    """The machine's zone as a real IANA zone (never a fixed offset), UTC if unknown.

    Looked up once per value of $TZ (a changed /etc/localtime needs a restart), since
    every fire of a job without a zone asks for it.
    """
    tz = os.environ.get("TZ", "")
    zone = _LOCAL_ZONES.get(tz)
    if zone is None:
        zone = _LOCAL_ZONES[tz] = _find_local_zone(tz)
    return zone


_LOCAL_ZONES: dict[str, ZoneInfo] = {}


def _find_local_zone(tz: str) -> ZoneInfo:
    name = tz.strip().removeprefix(":")
    if "zoneinfo/" in name:
        name = name.rsplit("zoneinfo/", 1)[1]
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        target = str(LOCALTIME.readlink())
        if "zoneinfo/" in target:
            return ZoneInfo(target.rsplit("zoneinfo/", 1)[1])
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    try:
        with LOCALTIME.open("rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (ValueError, OSError):
        return ZoneInfo("UTC")


def zone_of(schedule: Schedule) -> ZoneInfo:
    """The zone a schedule's wall-clock times are read in."""
    return local_zone() if schedule.timezone is None else ZoneInfo(schedule.timezone)


def next_fire(schedule: Schedule, after: datetime, anchor: datetime | None = None) -> datetime:
    """The first fire strictly after `after` (aware), as aware UTC.

    `anchor` is the previous scheduled fire of an `every` job (None: `after` itself, so a job
    seen for the first time fires one interval after it was loaded); other kinds ignore it.
    Raises NeverFiresError if the schedule has no fire after `after`.
    """
    if schedule.every_seconds is not None and schedule.days is None:  # every fire, no days
        _check_aware(after, anchor)
        interval = timedelta(seconds=schedule.every_seconds)
        anchor = (anchor or after).astimezone(UTC)
        return anchor + _first_step(after, anchor, interval) * interval
    for fire in _fires(schedule, after, anchor):
        return fire
    if schedule.cron is not None:
        raise NeverFiresError(f"cron {schedule.cron}", after, "no match within 50 years")
    raise NeverFiresError(describe(schedule), after, "its fires never fall on its days")


def fires_between(
    schedule: Schedule,
    start: datetime,
    end: datetime,
    anchor: datetime | None = None,
    limit: int | None = None,
) -> list[datetime]:
    """Fire times in (start, end], in order, at most `limit` of them (aware UTC)."""
    result: list[datetime] = []
    if end <= start or limit == 0:
        return result
    for fire in islice(_fires(schedule, start, anchor), limit):
        if fire > end:
            break
        result.append(fire)
    return result


def blackout_reason(job: Job, instant: datetime, tz: ZoneInfo) -> str | None:
    """Why `instant` is blacked out for `job` (judged on its local date in `tz`), else None."""
    local = instant.astimezone(tz).date()
    if local.weekday() in job.blackout_weekdays:
        return f"blackout day ({DAY_NAMES[local.weekday()]})"
    if local in job.blackout_dates:
        return f"blackout date {local.isoformat()}"
    return None


def describe(schedule: Schedule) -> str:
    """The schedule in words, e.g. "at 08:00 and 17:30:15 on Mon, Tue" or "every 10m"."""
    if schedule.cron is not None:
        try:
            words = CronSim(_single_ranges(schedule.cron), datetime(2000, 1, 1)).explain()
        except CronSimError:
            return f"cron {schedule.cron}"
        return f"cron {schedule.cron} ({words})"
    on_days = _describe_days(schedule.days)
    if schedule.every_seconds is not None:
        return f"every {format_duration(schedule.every_seconds)}{on_days}"
    times = [clock_text(t) for t in sorted(schedule.times)]
    listed = times[0] if len(times) == 1 else ", ".join(times[:-1]) + " and " + times[-1]
    return f"{'at' if on_days else 'daily at'} {listed}{on_days}"


# --- the three kinds ------------------------------------------------------------------


def _fires(schedule: Schedule, after: datetime, anchor: datetime | None) -> Iterator[datetime]:
    """Successive fires strictly after `after`, strictly increasing, aware UTC."""
    _check_aware(after, anchor)
    zone = zone_of(schedule)
    if schedule.days is not None and not schedule.days:
        return
    if schedule.times:
        yield from _time_fires(schedule, after, zone)
    elif schedule.every_seconds is not None:
        interval = timedelta(seconds=schedule.every_seconds)
        yield from _every_fires(interval, schedule.days, after, anchor or after, zone)
    elif schedule.cron is not None:
        yield from _cron_fires(schedule.cron, after, zone)


def _check_aware(*instants: datetime | None) -> None:
    for instant in instants:
        if instant is not None and (instant.tzinfo is None or instant.utcoffset() is None):
            raise ValueError(f"expected an aware datetime, got {text(instant)}")


def _first_step(after: datetime, anchor: datetime, interval: timedelta) -> int:
    """The first k >= 1 with anchor + k * interval strictly after `after`."""
    return max(1, (after - anchor) // interval + 1)


def _time_fires(schedule: Schedule, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    # Walking (local date, time) in order gives non-decreasing instants, because a skipped
    # time maps to the end of its gap and a repeated one to its first occurrence; so the
    # first candidate past `after` is the answer. The day before is included for zones whose
    # clocks fall back across midnight.
    clocks = [time(hour, minute, second) for hour, minute, second in sorted(schedule.times)]
    day = after.astimezone(zone).date() - timedelta(days=1)
    last = after
    while True:
        if schedule.days is None or day.weekday() in schedule.days:
            for clock in clocks:
                fire = _wall_instant(day, clock, zone)
                if fire > last:
                    last = fire
                    yield fire
        day += timedelta(days=1)


def _every_fires(
    interval: timedelta,
    days: frozenset[int] | None,
    after: datetime,
    anchor: datetime,
    zone: ZoneInfo,
) -> Iterator[datetime]:
    # Elapsed time: anchor + k * interval, k >= 1, in UTC; DST never moves it. `days` only
    # drops fires whose local weekday is not listed, jumping to the next listed day.
    anchor = anchor.astimezone(UTC)
    k = _first_step(after, anchor, interval)
    skipped = 0
    if days is None:
        while True:
            yield anchor + k * interval
            k += 1
    while True:
        fire = anchor + k * interval
        local_day = fire.astimezone(zone).date()
        if local_day.weekday() in days:
            skipped = 0
            yield fire
            k += 1
            continue
        skipped += 1
        if skipped > EVERY_DAYS_MAX_SKIPS:
            return
        day = local_day + timedelta(days=1)
        while day.weekday() not in days:
            day += timedelta(days=1)
        start = _wall_instant(day, time(0), zone)
        k = max(k + 1, -((anchor - start) // interval))


def _cron_fires(expr: str, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    # cronsim walks naive wall time here (no zone), so its matches are exactly the wall
    # times the expression names; turning them into instants is ours, by Debian cron's rule
    # (SPEC §5): a minute or hour field starting with "*" follows the wall clock, anything
    # else is a fixed time with the gap and fold rules of `time`.
    minute, hour = expr.split()[:2]
    if minute.startswith("*") or hour.startswith("*"):
        yield from _wall_clock_fires(_single_ranges(expr), after.astimezone(UTC), zone)
        return
    last = after
    for local in _wall_matches(_single_ranges(expr), after.astimezone(zone), after):
        # Wall times after after's own map to instants that never decrease (see
        # _wall_instant), so none of them lies before `after`; several skipped times can
        # share their gap's end, and fire once there.
        fire = _wall_instant(local.date(), local.time(), zone)
        if fire > last:
            last = fire
            yield fire


def _wall_clock_fires(expr: str, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    """Every instant strictly after `after` whose wall time in `zone` matches `expr`.

    Between two offset changes wall time is the instant plus one offset, so the fires of
    such a stretch are the expression's wall-time matches in it, less that offset. A match
    past the stretch's end is dropped and the walk restarts at the change, in the new
    offset: a 30-minute shift forward loses only the 30 minutes that never appear, and a
    shift back repeats exactly the wall times shown twice.
    """
    start, is_inclusive = after, False
    while True:
        offset = _offset_at(start, zone)
        wall = start + offset
        # At a change the change instant itself may fire: ask for matches from one second
        # before its wall time (offsets change on whole seconds; matches are whole minutes).
        begin = wall - timedelta(seconds=1) if is_inclusive else wall
        for local in _wall_matches(expr, begin, after):
            fire = local.replace(tzinfo=UTC) - offset
            change = _offset_change(start, fire, offset, zone)
            if change is not None:
                start, is_inclusive = change, True
                break
            yield fire
            start = fire
        else:
            return


def _wall_matches(expr: str, wall: datetime, after: datetime) -> Iterator[datetime]:
    """cronsim's matches strictly after `wall` (read as naive wall time), naive."""
    try:
        yield from CronSim(expr, wall.replace(tzinfo=None))
    except CronSimError as err:
        raise NeverFiresError(f"cron {expr}", after, str(err)) from None


def _offset_at(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has an offset
    return offset


# No zone in the tz database has changed its offset twice within 7 days since 1970 (measured
# over every zone of tzdata 2026), so probing a day apart cannot step over a change and back.
OFFSET_PROBE = timedelta(days=1)


def _offset_change(
    start: datetime, end: datetime, offset: timedelta, zone: ZoneInfo
) -> datetime | None:
    """The first instant in (start, end] whose offset is not `offset`, or None."""
    low = start
    while low < end:
        high = min(low + OFFSET_PROBE, end)
        if _offset_at(high, zone) != offset:
            return _first_changed(low, high, offset, zone)
        low = high
    return None


def _first_changed(low: datetime, high: datetime, offset: timedelta, zone: ZoneInfo) -> datetime:
    """The first whole second in (low, high] whose offset is not `offset` (high's is not)."""
    base = low.replace(microsecond=0)
    lo, hi = 0, int((high - base).total_seconds())
    if base + timedelta(seconds=hi) < high:
        hi += 1
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if _offset_at(base + timedelta(seconds=middle), zone) == offset:
            lo = middle
        else:
            hi = middle
    return base + timedelta(seconds=hi)


# --- helpers ----------------------------------------------------------------------------


def _wall_instant(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The UTC instant a wall time fires at: a skipped time at the end of its gap, a
    repeated one at its first occurrence."""
    offset = _steady_offset(day, zone)
    if offset is not None:
        return datetime.combine(day, clock, tzinfo=UTC) - offset
    naive = datetime.combine(day, clock)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first <= second:
        return first
    # Skipped: fold=1 reads the time with the offset after the gap (an instant before the
    # transition), fold=0 with the offset before it (an instant after). The fire is the
    # transition itself: the first whole second in (second, first] with the new offset.
    offset_after = first.astimezone(zone).utcoffset()
    low, high = 0, int((first - second).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        if (second + timedelta(seconds=middle)).astimezone(zone).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return second + timedelta(seconds=high)


_STEADY_OFFSETS: dict[tuple[ZoneInfo, date], timedelta | None] = {}
STEADY_OFFSETS_KEPT = 4096


def _steady_offset(day: date, zone: ZoneInfo) -> timedelta | None:
    """The zone's UTC offset all through `day`, or None if its clocks may change that day.

    Remembered per (zone, day): 10,000 daily jobs share a handful of days. The offset is
    read at the day's start, noon and end; a day whose clocks moved twice between those
    readings and back would look steady, and no zone in the tz database has one.
    """
    key = (zone, day)
    try:
        return _STEADY_OFFSETS[key]  # one lookup: another thread may clear it in between
    except KeyError:
        pass
    if len(_STEADY_OFFSETS) >= STEADY_OFFSETS_KEPT:
        _STEADY_OFFSETS.clear()
    readings = [
        datetime.combine(when, clock, tzinfo=zone).replace(fold=fold).utcoffset()
        for when, clock in ((day, time(0)), (day, time(12)), (day + timedelta(days=1), time(0)))
        for fold in (0, 1)
    ]
    steady = readings[0] if all(r == readings[0] for r in readings) else None
    _STEADY_OFFSETS[key] = steady
    return steady


def _single_ranges(expr: str) -> str:
    """Rewrite a one-value range ("5-5", "5-5/2") as the plain value, as Debian cron reads it.

    cronsim reads "5-5/2" like "5/2" (5, 7, …, 59); Debian steps within the range: only 5.
    """
    return SINGLE_RANGE_RE.sub(_single_range, expr)


def _single_range(match: re.Match[str]) -> str:
    return match[1] if int(match[1]) == int(match[2]) else match[0]


def _describe_days(days: frozenset[int] | None) -> str:
    if days is None or len(days) == 7:
        return ""
    return " on " + ", ".join(WEEKDAY_NAMES[d].title() for d in sorted(days))
