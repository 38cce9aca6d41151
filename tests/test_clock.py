"""SystemClock: wake() ends the waits in progress, and each thread's next wait, once."""

from __future__ import annotations

import threading
import time

from poller.clock import SystemClock


def wait_took(clock: SystemClock, seconds: float) -> tuple[bool, float]:
    began = time.monotonic()
    woken = clock.wait(seconds)
    return woken, time.monotonic() - began


def test_a_wake_ends_a_wait_in_progress() -> None:
    clock = SystemClock()
    timer = threading.Timer(0.05, clock.wake)
    timer.start()
    woken, took = wait_took(clock, 10)
    assert woken and took < 5
    assert wait_took(clock, 0.01)[0] is False  # used up


def test_a_wake_while_busy_ends_the_next_wait_at_once() -> None:
    clock = SystemClock()
    clock.wake()  # the loop is busy, not waiting: a reload or SIGTERM must not be lost
    woken, took = wait_took(clock, 10)
    assert woken and took < 5


def test_another_threads_wait_does_not_use_up_the_loops_wake() -> None:
    clock = SystemClock()
    assert clock.wait(0) is False  # the loop has waited once, seen no wake
    clock.wake()  # then, while the loop works, SIGTERM
    seen: list[bool] = []
    retry = threading.Thread(target=lambda: seen.append(clock.wait(0.01)))  # a retry backoff
    retry.start()
    retry.join()
    assert seen == [True]  # the retry's wait is cut short too (a wake need not be for it)
    woken, took = wait_took(clock, 10)
    assert woken and took < 5  # and the loop still sees the wake at once
