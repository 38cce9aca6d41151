"""The daemon's bounded worker pool: runs calls in order on at most N threads.

concurrent.futures' pool builds a Future, a work item and a condition per call; the daemon
needs none of them (a run's outcome is its record), and at 1,000 fires a second they cost
more than the hand-off itself. This pool is a queue and the threads that drain it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Call = tuple[Callable[..., object], tuple[Any, ...]]


class WorkerPool:
    """Threads start as calls arrive while fewer threads wait than calls, up to `max_workers`."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self.max_workers = max_workers
        self.prefix = thread_name_prefix
        self.is_shut_down = False
        self._calls: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., object], *args: Any) -> None:
        """Queue `function(*args)`; it must handle its own errors.

        Raises:
            RuntimeError: the pool is shut down.
        """
        if self.is_shut_down:
            raise RuntimeError("the worker pool is shut down")
        self._calls.put((function, args))
        if self._calls.qsize() > self._idle and len(self._threads) < self.max_workers:
            with self._lock:
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
        self.is_shut_down = True
        dropped = 0
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            dropped += call is not None
        with self._lock:
            for _ in self._threads:
                self._calls.put(None)
        return dropped

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            call = self._calls.get()
            with self._lock:
                self._idle -= 1
            if call is None:
                return
            function, args = call
            try:
                function(*args)
            except Exception:  # a worker outlives any call
                log.exception("a call on the worker pool failed")
