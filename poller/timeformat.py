"""How instants and durations are written and read, for every output and input: run
records, the store's columns, the API, `history`, the log, messages and config durations.

- An instant is ISO 8601 with its offset (`2026-03-29T01:30:00+00:00`), microseconds only
  when there are some: in UTC in records and the API's runs (`utc_text`), in the job's zone
  where a schedule is shown (`text`), in the machine's zone with milliseconds in the log.
  The store's columns are fixed width (`column`), so their text order is time order.
- Read back (`parse`), an instant must carry its offset; a naive one is refused, since it
  would silently be read in some zone.
- A duration in config is `30s`, `10m`, `2h`, `1d`, a number of seconds or an object of
  units; in messages it is seconds (`12.5s`); in records whole milliseconds (`duration_ms`).
- A time of day in config is `HH:MM` or `HH:MM:SS` (`parse_clock`, `clock_text`).

It reads no clock except `ms_since`, which measures with the monotonic one.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, date, datetime
from typing import Any

DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_FIELDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
CLOCK_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
DURATION_EXPECTED = 'expected a duration like "30s", "10m", "2h" or "1d"'


# --- instants ---------------------------------------------------------------------------


def text(instant: datetime) -> str:
    """An aware instant as ISO 8601 in its own zone (a schedule's fires in the job's zone)."""
    return instant.isoformat()


def utc_text(instant: datetime) -> str:
    """An instant as ISO 8601 in UTC: records, the API's runs, messages about the store."""
    return instant.astimezone(UTC).isoformat()


def column(instant: datetime) -> str:
    """An instant as a stored column: UTC with microseconds always, so text order is time
    order (SQL compares these strings)."""
    return instant.astimezone(UTC).isoformat(timespec="microseconds")


def log_text(created: float) -> str:
    """A log record's time: the machine's zone with its offset, to the millisecond, so a
    line written in a repeated hour of a DST change says which one it was."""
    return datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


def local_text(instant: datetime) -> str:
    """An instant in the machine's zone, to the second (`history`'s column)."""
    return instant.astimezone().isoformat(timespec="seconds")


def parse(value: str | datetime) -> datetime:
    """An ISO 8601 instant with an offset (`Z` or `+HH:MM`) as aware UTC.

    Raises:
        ValueError: "'…' is not an ISO 8601 instant", or "'…' needs a UTC offset".
    """
    instant = value if isinstance(value, datetime) else parse_wall(value)
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{str(value)!r} needs a UTC offset")
    return instant.astimezone(UTC)


def parse_wall(value: str) -> datetime:
    """An ISO 8601 date and time as written: naive when it has no offset, for a caller that
    says which zone it is in (`check --after`).

    Raises:
        ValueError: "'…' is not an ISO 8601 instant".
    """
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 instant") from None


def parse_or_none(value: Any) -> datetime | None:
    """`parse` for data read back from records: anything unreadable is None, never an error."""
    if not isinstance(value, str | datetime):
        return None
    try:
        return parse(value)
    except ValueError:
        return None


def json_default(value: Any) -> str:
    """`json.dumps(default=…)` for every JSON Poller writes: instants and dates as ISO 8601
    (a function's output, a record), anything else JSON cannot hold as its str()."""
    if isinstance(value, datetime):
        return text(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


# --- durations --------------------------------------------------------------------------


MAX_DURATION_DAYS = 3650
MAX_DURATION_SECONDS = MAX_DURATION_DAYS * 86400.0
"""Longer durations are refused: a fire grid centuries away overflows datetime arithmetic."""


def parse_duration(value: str | dict[str, float] | float) -> float:
    """Seconds in "30s" / "10m" / "2h" / "1d" / {"hours": 2, "minutes": 30} / a number.

    Raises:
        ValueError: with what was expected.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = DURATION_RE.match(value)
        if not match:
            raise ValueError(DURATION_EXPECTED)
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    elif isinstance(value, dict):
        unknown = sorted(set(value) - set(DURATION_FIELDS))
        if unknown or not value:
            raise ValueError('expected an object with "days", "hours", "minutes" and/or "seconds"')
        seconds = 0.0
        for key, amount in value.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
                raise ValueError(f'"{key}" must be a non-negative number')
            seconds += amount * DURATION_FIELDS[key]
    else:
        raise ValueError(DURATION_EXPECTED)
    if seconds <= 0:
        raise ValueError("expected a duration greater than zero")
    if not seconds <= MAX_DURATION_SECONDS:  # NaN and infinity too
        raise ValueError(
            f"expected at most {MAX_DURATION_DAYS}d ({MAX_DURATION_DAYS // 365} years)"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest `parse_duration` string for a number of seconds ("10m", "1d", "90s")."""
    for unit in ("d", "h", "m"):
        size = DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds}s"


def seconds_text(seconds: float) -> str:
    """A duration in a message: seconds to at most two decimals ("30s", "0.25s", "91.5s")."""
    return f"{round(seconds, 2):g}s"


def ms_between(started: datetime, finished: datetime) -> int:
    """Whole milliseconds from `started` to `finished`, never negative (a clock step back)."""
    return max(0, round((finished - started).total_seconds() * 1000))


def ms_since(began: float) -> int:
    """Whole milliseconds since `began`, a time.monotonic() reading."""
    return round((time.monotonic() - began) * 1000)


# --- times of day -----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # jobs at the same time share one tuple
def parse_clock(value: str) -> tuple[int, int, int]:
    """(hour, minute, second) of "HH:MM" or "HH:MM:SS" (24-hour clock)."""
    match = CLOCK_RE.fullmatch(value)
    if not match:
        raise ValueError('expected "HH:MM" or "HH:MM:SS" (24-hour clock)')
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def clock_text(value: tuple[int, int, int]) -> str:
    """ "HH:MM", or "HH:MM:SS" when the seconds are not zero."""
    hour, minute, second = value
    return f"{hour:02d}:{minute:02d}" + (f":{second:02d}" if second else "")
