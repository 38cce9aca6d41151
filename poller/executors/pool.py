"""The daemon's bounded worker pool: runs calls in order on at most N threads.

concurrent.futures' pool builds a Future, a work item and a condition per call; the daemon
needs none of them (a run's outcome is its record), and at 1,000 fires a second they cost
more than the hand-off itself. Here a call goes straight to the thread that went idle last:
its stack and caches are still warm, and at a steady rate one or two threads do all the
work instead of every thread in turn (measured in the (a) workload of bench_scheduler.py:
one context switch per fire on the worker side instead of three).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Call = tuple[Callable[..., object], tuple[Any, ...]]


class _Idle:
    """An idle worker: blocked on `wake` until a call (or None: stop) is put in `call`."""

    __slots__ = ("call", "wake")

    def __init__(self) -> None:
        self.call: Call | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class WorkerPool:
    """Threads start as calls arrive while none is idle, up to `max_workers`."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self.max_workers = max_workers
        self.prefix = thread_name_prefix
        self.is_shut_down = False
        self._queued: deque[Call] = deque()  # calls waiting for a thread
        self._idle: list[_Idle] = []  # a stack: the last to go idle is woken first
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., object], *args: Any) -> None:
        """Run `function(*args)` on a worker; it must handle its own errors.

        Raises:
            RuntimeError: the pool is shut down.
        """
        with self._lock:
            if self.is_shut_down:
                raise RuntimeError("the worker pool is shut down")
            if self._idle:
                idle = self._idle.pop()
                idle.call = (function, args)
                idle.wake.release()
                return
            self._queued.append((function, args))
            if len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work,
                    name=f"{self.prefix}_{len(self._threads)}",
                    daemon=True,  # a run stuck in a call must not hold the exit
                )
                self._threads.append(thread)
                thread.start()

    def shutdown(self) -> int:
        """Take no more calls and drop the queued ones; returns how many were dropped.

        Calls already running go on to their end.
        """
        with self._lock:
            self.is_shut_down = True
            dropped = len(self._queued)
            self._queued.clear()
            for idle in self._idle:
                idle.wake.release()  # with no call: the worker ends
            self._idle.clear()
        return dropped

    def _work(self) -> None:
        idle = _Idle()
        while True:
            with self._lock:
                call = self._queued.popleft() if self._queued else None
                if call is None:
                    if self.is_shut_down:
                        return
                    self._idle.append(idle)
            if call is None:
                idle.wake.acquire()
                call, idle.call = idle.call, None
                if call is None:
                    return
            function, args = call
            try:
                function(*args)
            except Exception:  # a worker outlives any call
                log.exception("a call on the worker pool failed")
