"""The clock the daemon and the backoff sleeper read: now() and an interruptible wait().

Code that waits gets a Clock passed in, so tests drive time with a FakeClock and
reload or shutdown can wake a wait at once.
"""

from __future__ import annotations

import contextlib
import os
import select
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

    def sleep(self, seconds: float) -> bool:
        """Sleep `seconds` unless stop() comes first; True when stopped (a retry backoff)."""
        ...

    def stop(self) -> None:
        """Wake every wait and sleep for good: the daemon is stopping."""
        ...


class Wakeup:
    """A wake-up any thread or signal handler may send, and one thread waits for.

    A pipe, not a threading.Condition: signal handlers run on the main thread between
    any two bytecodes, also inside a Condition's own notify, whose waiter list a second
    notify then corrupts (seen: IndexError in notify_all under a burst of SIGHUPs). Writing
    a byte to a pipe takes no lock. A wake sent while nobody waits ends the next wait.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: a wake is pending anyway
            os.write(self._write, b"\0")

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if woken (and the wake is used up)."""
        ready = readable(self._read, seconds)
        if ready:
            with contextlib.suppress(BlockingIOError):  # drained
                while os.read(self._read, 4096):
                    pass
        return ready


def readable(fd: int, seconds: float) -> bool:
    """Wait up to `seconds` for `fd` to be readable. poll, not select: select fails on a
    descriptor numbered 1024 or more, which a busy daemon's pipes may get."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(seconds, 0.0) * 1000))


class SystemClock:
    """Wall-clock time. wake() ends the loop's current (or next) wait; stop() ends every
    wait and sleep, now and later.

    The loop waits (a reload or a finished run wakes it); retry backoffs sleep, so that a
    reload does not send every waiting retry at a failing platform together, while a stop
    ends them at once. Both wake() and stop() are safe in a signal handler: no locks.
    """

    def __init__(self) -> None:
        self._wakeup = Wakeup()
        # Written once by stop() and never read: every select on it returns at once.
        self._stopped_read, self._stopped_write = os.pipe()
        self._is_stopped = False

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, seconds: float) -> bool:
        """The loop's wait (one thread only)."""
        if self._is_stopped:
            return True
        return self._wakeup.wait(seconds)

    def wake(self) -> None:
        self._wakeup.set()

    def sleep(self, seconds: float) -> bool:
        if self._is_stopped:
            return True
        return readable(self._stopped_read, seconds)

    def stop(self) -> None:
        if not self._is_stopped:
            self._is_stopped = True
            os.write(self._stopped_write, b"\0")
        self._wakeup.set()


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
