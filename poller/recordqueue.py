"""Run records on their way into the history: queued, then written in batches by one thread.

A busy daemon ends a run every millisecond; a commit per record would not keep up, and a
run that ends within a batch's wait needs writing only once, finished.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)

WRITE_DELAY_SECONDS = 0.05
"""A queued record waits this long for others, so a busy daemon commits once per batch."""


class Recordable(Protocol):
    """A run result that can become its SPEC §4 record (poller.results.RunResult)."""

    @property
    def run_id(self) -> str: ...
    @property
    def scheduled_for(self) -> datetime | None: ...
    @property
    def started_at(self) -> datetime: ...

    def to_dict(self) -> dict[str, Any]: ...


class RecordQueue:
    """Holds records for `write` (one call per batch, newest record of each run only)."""

    def __init__(self, write: Callable[[list[Recordable]], None], name: str) -> None:
        self._write = write
        self._name = name
        self._pending: deque[Recordable] = deque()
        self._unwritten: dict[str, Recordable] = {}  # queued, by run id, for queued()
        self._has_work, self._write_now = threading.Event(), threading.Event()
        self._written = threading.Condition()
        self._writing = self._closing = False
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def add(self, result: Recordable) -> None:
        """Queue a run's record; a newer one of the same run replaces it."""
        if self._writer is None:
            with self._start_lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._writer.start()
        self._unwritten[result.run_id] = result
        self._pending.append(result)
        if not self._has_work.is_set():
            self._has_work.set()

    def queued(self, run_id: str) -> Recordable | None:
        """A run's newest record while it waits to be written, else None."""
        return self._unwritten.get(run_id)

    def flush(self) -> None:
        """Wait until every record given to add() is written."""
        if self._writer is None:
            return
        self._write_now.set()
        self._has_work.set()
        with self._written:
            self._written.wait_for(lambda: not self._pending and not self._writing)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        if self._writer is not None:
            self._closing = True
            self.flush()
            self._writer.join()

    def _run(self) -> None:
        while not (self._closing and not self._pending):
            self._has_work.wait()
            self._write_now.wait(WRITE_DELAY_SECONDS)
            self._write_now.clear()
            with self._written:
                self._writing = True
            self._has_work.clear()  # before taking the batch: a later add() sets it
            latest: dict[str, Recordable] = {}
            while self._pending:
                result = self._pending.popleft()
                latest[result.run_id] = result
            try:
                self._write(list(latest.values()))
            except Exception:  # the writer outlives a failed batch; the log says what was lost
                log.exception("%d run record(s) could not be written", len(latest))
            for run_id, result in latest.items():
                if self._unwritten.get(run_id) is result:
                    del self._unwritten[run_id]
            with self._written:
                self._writing = False
                self._written.notify_all()
