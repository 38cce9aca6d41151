"""The clock the daemon and the backoff sleeper read: now() and an interruptible wait().

Code that waits gets a Clock passed in, so tests drive time with a FakeClock and
reload or shutdown can wake a wait at once.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return True if woken early by `wake()`."""
        ...

    def wake(self) -> None:
        """End the current (or next) wait at once."""
        ...


class SystemClock:
    """Wall-clock time; waits sit on an Event so wake() interrupts them."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, seconds: float) -> bool:
        woken = self._event.wait(max(seconds, 0.0))
        self._event.clear()
        return woken

    def wake(self) -> None:
        self._event.set()
