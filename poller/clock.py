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
    """Wall-clock time. wake() ends every wait in progress, and the next wait of each thread
    that was not waiting then.

    The loop and the HTTP retries' backoff share this clock. Each thread counts the wakes it
    has seen, so one thread's wait never uses up a wake that another (the loop, told of a
    reload or a stop while busy) has yet to see.
    """

    def __init__(self) -> None:
        # Re-entrant: SIGTERM's handler calls wake() on the main thread, which may be inside
        # wait() at that moment, holding this lock.
        self._woken = threading.Condition(threading.RLock())
        self._wakes = 0
        self._seen = threading.local()  # .wakes: the count at this thread's last wait

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, seconds: float) -> bool:
        with self._woken:
            seen = getattr(self._seen, "wakes", 0)
            if self._wakes == seen:
                self._woken.wait(max(seconds, 0.0))
            self._seen.wakes = self._wakes
            return self._wakes != seen

    def wake(self) -> None:
        with self._woken:
            self._wakes += 1
            self._woken.notify_all()


class Flag:
    """A flag that signal handlers may set: a plain attribute, so no lock.

    threading.Event takes a lock to set; a second signal arriving while the first
    handler holds it runs its handler on the same thread, which then waits forever for
    that lock (seen: two quick SIGTERMs left a daemon that never stopped).
    """

    def __init__(self) -> None:
        self._is_set = False

    def set(self) -> None:
        self._is_set = True

    def clear(self) -> None:
        self._is_set = False

    def is_set(self) -> bool:
        return self._is_set
