"""SystemClock: wake() ends the loop's wait (now or next); only stop() ends a backoff's sleep;
both are safe inside signal handlers."""

from __future__ import annotations

import os
import signal
import threading
import time

from poller.clock import SystemClock


def took(call: object, *args: float) -> tuple[bool, float]:
    began = time.monotonic()
    result = call(*args)  # type: ignore[operator]
    return bool(result), time.monotonic() - began


def test_a_wake_ends_a_wait_in_progress_once() -> None:
    clock = SystemClock()
    threading.Timer(0.05, clock.wake).start()
    woken, seconds = took(clock.wait, 10)
    assert woken and seconds < 5
    assert took(clock.wait, 0.01)[0] is False  # used up


def test_a_wake_while_busy_ends_the_next_wait_at_once() -> None:
    clock = SystemClock()
    clock.wake()  # the loop is busy, not waiting: a reload or a finished run must not be lost
    woken, seconds = took(clock.wait, 10)
    assert woken and seconds < 5


def test_a_wake_does_not_end_a_sleep_but_a_stop_ends_all() -> None:
    clock = SystemClock()
    threading.Timer(0.05, clock.wake).start()
    stopped, seconds = took(clock.sleep, 0.3)
    assert not stopped and seconds >= 0.29  # a reload does not hurry a retry backoff
    threading.Timer(0.05, clock.stop).start()
    stopped, seconds = took(clock.sleep, 10)
    assert stopped and seconds < 5
    stopped, seconds = took(clock.sleep, 10)  # and every later one
    assert stopped and seconds < 1
    assert took(clock.wait, 10)[0] is True


def test_wakes_from_a_signal_storm_never_break_the_clock() -> None:
    clock = SystemClock()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: clock.wake())
    try:
        waiter = threading.Thread(target=lambda: clock.sleep(0.5))
        waiter.start()
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            os.kill(os.getpid(), signal.SIGUSR1)
        waiter.join()
        assert took(clock.wait, 10)[0] is True
        assert took(clock.wait, 0.01)[0] is False
    finally:
        signal.signal(signal.SIGUSR1, previous)
