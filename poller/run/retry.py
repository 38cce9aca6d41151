"""Retry policy of outgoing calls: which failures are retried and how long to wait before each.

Pure functions over numbers and header text; the waiting (through a Clock) and the I/O
live in poller.run.transport.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# RFC 9110 says whole seconds; fractions are read too, since some servers send them.
_SECONDS_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently one logical call is retried."""

    retries: int
    backoff_seconds: float
    backoff_max_seconds: float


def is_retryable_status(status: int) -> bool:
    """True for answers worth another try: 429 Too Many Requests and every 5xx."""
    return status == 429 or 500 <= status <= 599


def backoff_delay(
    attempt: int, base_seconds: float, cap_seconds: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 for the first attempt).

    Exponential (`base_seconds * 2**(attempt-1)`) with "equal jitter": a uniform draw
    between half and all of it, then capped at `cap_seconds`. Equal jitter keeps clients
    apart while every delay is at least as long as the one before (the lower bound of
    attempt n+1 is the upper bound of attempt n), whatever the random draws.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if base_seconds <= 0 or cap_seconds <= 0:
        return 0.0
    # Once even the lowest draw reaches the cap, answer the cap without computing a power
    # of two that could overflow (in logarithms, so huge attempt numbers are fine).
    if attempt - 1 >= math.log2(cap_seconds) + 1 - math.log2(base_seconds):
        return cap_seconds
    try:
        exponential = math.ldexp(base_seconds, attempt - 1)
    except OverflowError:  # only for delays near the largest float, where the cap rules
        return cap_seconds
    draw = (rng or random).random()
    return min(cap_seconds, exponential / 2 + draw * exponential / 2)


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks us to wait: delta-seconds or an HTTP-date.

    Returns None for a missing or unreadable header; a date in the past gives 0.
    `now` must be aware (UTC); an HTTP-date without a zone counts as UTC.
    """
    if header is None:
        return None
    text = header.strip()
    if not text:
        return None
    if _SECONDS_RE.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retry_delay(
    policy: RetryPolicy,
    failures: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """The wait before the next attempt after `failures` failed attempts, or None to give up.

    A server's Retry-After wins over our own backoff but is capped by
    `backoff_max_seconds` like it, so a hostile or buggy header cannot park a run.
    """
    if failures > policy.retries:
        return None
    if retry_after is not None:
        return max(0.0, min(retry_after, policy.backoff_max_seconds))
    return backoff_delay(failures, policy.backoff_seconds, policy.backoff_max_seconds, rng)
