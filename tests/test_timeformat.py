"""poller.timeformat: the one way instants and durations are written and read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from poller import timeformat


def test_an_instant_is_iso_with_its_offset_and_records_are_utc() -> None:
    at = datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=1)))
    assert timeformat.text(at) == "2026-03-29T02:30:00+01:00"
    assert timeformat.utc_text(at) == "2026-03-29T01:30:00+00:00"
    assert timeformat.utc_text(at.replace(microsecond=5)) == "2026-03-29T01:30:00.000005+00:00"


def test_columns_are_fixed_width_so_text_order_is_time_order() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    instants = [base + timedelta(microseconds=n) for n in (0, 1, 999_999, 1_000_000)]
    columns = [timeformat.column(instant) for instant in instants]
    assert len({len(text) for text in columns}) == 1
    assert sorted(columns) == columns


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T08:00:00Z", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, tzinfo=UTC)),
    ],
    ids=["z", "offset"],
)
def test_parse_gives_utc(value: str, expected: datetime) -> None:
    parsed = timeformat.parse(value)
    assert parsed == expected and parsed.tzinfo is UTC


def test_parse_refuses_naive_and_non_iso_text_saying_which() -> None:
    with pytest.raises(ValueError, match=r"^'2024-05-01T08:00:00' needs a UTC offset$"):
        timeformat.parse("2024-05-01T08:00:00")
    with pytest.raises(ValueError, match=r"^'yesterday' is not an ISO 8601 instant$"):
        timeformat.parse("yesterday")
    assert timeformat.parse_or_none("yesterday") is None
    assert timeformat.parse_or_none(None) is None
    assert timeformat.parse_wall("2024-05-01T08:00:00").tzinfo is None


def test_json_writes_instants_and_dates_as_iso() -> None:
    value = {"at": datetime(2024, 5, 1, 8, tzinfo=UTC), "day": date(2024, 5, 1), "s": {1}}
    assert json.loads(json.dumps(value, default=timeformat.json_default)) == {
        "at": "2024-05-01T08:00:00+00:00",
        "day": "2024-05-01",
        "s": "{1}",
    }


@pytest.mark.parametrize(
    ("seconds", "expected"), [(30, "30s"), (0.25, "0.25s"), (91.456, "91.46s"), (2.0, "2s")]
)
def test_seconds_in_messages(seconds: float, expected: str) -> None:
    assert timeformat.seconds_text(seconds) == expected


def test_milliseconds_never_go_negative() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert timeformat.ms_between(start, start + timedelta(milliseconds=1500.4)) == 1500
    assert timeformat.ms_between(start, start - timedelta(seconds=1)) == 0


def test_log_times_tell_the_two_copies_of_a_repeated_hour_apart() -> None:
    # In a child: the log's zone is the process's (TZ), and this test must not change ours.
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC).timestamp()  # 01:30 EDT
    code = (
        "from poller.timeformat import log_text; "
        f"print(log_text({first})); print(log_text({first + 3600.25}))"
    )
    env = {**os.environ, "TZ": "America/New_York"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == [
        "2026-11-01T01:30:00.000-04:00",
        "2026-11-01T01:30:00.250-05:00",
    ], result.stderr
