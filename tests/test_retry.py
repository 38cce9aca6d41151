"""The pure retry policy: backoff growth, jitter bounds and cap, Retry-After forms, give-up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller.run.retry import (
    RetryPolicy,
    backoff_delay,
    is_retryable_status,
    retry_after_seconds,
    retry_delay,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FixedRandom(random.Random):
    """An rng whose every draw is `value`."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("attempt", "draw", "expected"),
    [
        (1, 0.0, 0.5),
        (1, 1.0, 1.0),
        (2, 0.0, 1.0),
        (3, 0.5, 3.0),
        (4, 0.0, 4.0),
        (5, 0.0, 8.0),
        (6, 0.9, 10.0),
        (10_000, 0.0, 10.0),
    ],
    ids=["first-low", "first-high", "second-low", "third-mid", "fourth", "fifth", "capped", "huge"],
)
def test_backoff_delay_doubles_with_equal_jitter_and_caps(
    attempt: int, draw: float, expected: float
) -> None:
    assert backoff_delay(attempt, 1.0, 10.0, FixedRandom(draw)) == pytest.approx(expected)


def test_backoff_delay_counts_attempts_from_one() -> None:
    with pytest.raises(ValueError, match="attempt counts from 1, got 0"):
        backoff_delay(0, 1.0, 10.0)


@given(
    base=st.floats(min_value=0.0, max_value=1e308) | st.floats(min_value=0.0, max_value=100.0),
    cap=st.floats(min_value=0.0, max_value=1e308) | st.floats(min_value=0.0, max_value=1000.0),
    seed=st.integers(),
    first=st.integers(min_value=1, max_value=3000),
    count=st.integers(min_value=1, max_value=40),
)
def test_backoff_delays_never_exceed_the_cap_and_never_shrink(
    base: float, cap: float, seed: int, first: int, count: int
) -> None:
    rng = random.Random(seed)
    attempts = range(first, first + count)
    delays = [backoff_delay(n, base, cap, rng) for n in attempts]
    assert all(0.0 <= d <= cap for d in delays)
    assert delays == sorted(delays)
    # Jitter never takes more than half of the exponential delay.
    if first < 900:
        assert all(
            d >= min(cap, base * 2.0 ** (n - 2)) for n, d in zip(attempts, delays, strict=True)
        )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", None),
        ("soon", None),
        ("\uff11\uff12", None),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
        ("Sun, 01 Mar 2026 12:01:00 +0100", 0.0),
        ("Sun, 01 Mar 2026 12:01:00", 60.0),
    ],
    ids=[
        "missing",
        "empty",
        "seconds",
        "padded",
        "fraction",
        "zero",
        "negative",
        "word",
        "fullwidth-digits",
        "date-ahead",
        "date-past",
        "date-with-offset",
        "date-without-zone",
    ],
)
def test_retry_after_seconds_reads_both_forms(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, NOW) == expected


@given(seconds=st.integers(min_value=0, max_value=10**6))
def test_retry_after_http_date_round_trips(seconds: int) -> None:
    header = format_datetime(NOW + timedelta(seconds=seconds), usegmt=True)
    assert retry_after_seconds(header, NOW) == seconds
    assert retry_after_seconds(str(seconds), NOW) == seconds


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, False),
        (400, False),
        (401, False),
        (404, False),
        (408, False),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (599, True),
    ],
    ids=lambda value: str(value),
)
def test_retryable_statuses_are_429_and_5xx(status: int, expected: bool) -> None:
    assert is_retryable_status(status) is expected


def test_retry_delay_gives_up_after_the_retries() -> None:
    policy = RetryPolicy(retries=2, backoff_seconds=1.0, backoff_max_seconds=30.0)
    rng = FixedRandom(1.0)
    assert [retry_delay(policy, n, None, rng) for n in (1, 2, 3)] == [1.0, 2.0, None]
    assert retry_delay(RetryPolicy(0, 1.0, 30.0), 1) is None


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(3.0, 3.0), (0.0, 0.0), (45.0, 10.0)],
    ids=["honoured", "immediately", "capped"],
)
def test_retry_delay_prefers_retry_after_within_the_cap(
    retry_after: float, expected: float
) -> None:
    policy = RetryPolicy(retries=3, backoff_seconds=4.0, backoff_max_seconds=10.0)
    assert retry_delay(policy, 1, retry_after, FixedRandom(1.0)) == expected
