"""Run records on their way into a store: queued, then written in batches by one thread.

A busy daemon ends a run every millisecond; a commit per record would not keep up, and a
record replaced within a batch's wait is written once, in its newest state. Only later
states of a run pass through here: its first record was written with its claim.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)

WRITE_DELAY_SECONDS = 0.05
"""A queued record waits this long for others, so a busy daemon commits once per batch."""
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits before writing a failed batch again: the last repeats until a write succeeds."""


class Recordable(Protocol):
    """A run result that can become its SPEC §4 record (poller.run.results.RunResult)."""

    @property
    def run_id(self) -> str: ...
    @property
    def scheduled_for(self) -> datetime | None: ...
    @property
    def started_at(self) -> datetime: ...

    def to_dict(self) -> dict[str, Any]: ...


class RecordQueue:
    """Holds records for `write` (one call per batch, the newest record of each run only).

    A batch that fails stays queued (unless a newer record of the same run replaced it)
    and is tried again after RETRY_SECONDS; `failing` says why meanwhile. Nothing queued
    is dropped while the process lives.
    """

    def __init__(self, write: Callable[[list[Recordable]], None], name: str) -> None:
        self._write = write
        self._name = name
        self._lock = threading.Condition()  # guards everything below
        self._queued: dict[str, Recordable] = {}  # by run id, in arrival order
        self._writing = self._closing = self._hurry = False
        self._failures = 0
        self.failing: str | None = None
        self._writer: threading.Thread | None = None

    def add(self, result: Recordable) -> None:
        """Queue a run's record; a newer one of the same run replaces it."""
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._writer.start()
            was_empty = not self._queued
            self._queued.pop(result.run_id, None)
            self._queued[result.run_id] = result
            if was_empty:  # the writer waits for work; else it is gathering a batch
                self._lock.notify_all()

    def queued(self, run_id: str) -> Recordable | None:
        """A run's newest record while it waits to be written, else None."""
        with self._lock:
            return self._queued.get(run_id)

    def flush(self) -> None:
        """Wait until the queue has been written, or until a batch failed and waits to retry."""
        with self._lock:
            if self._writer is None:
                return
            self._hurry = True
            self._lock.notify_all()
            failures = self._failures
            self._lock.wait_for(
                lambda: (not self._queued and not self._writing) or self._failures > failures
            )

    def close(self) -> None:
        """Write what is queued (one more try if the store fails), then stop the writer."""
        with self._lock:
            writer, self._closing = self._writer, True
            self._lock.notify_all()
        if writer is not None:
            writer.join()
        if self._queued:
            log.error(
                "%d run record(s) could not be written before the daemon stopped; "
                "the next start records their runs as interrupted",
                len(self._queued),
            )

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._queued or self._closing)
                # The batch gathers for WRITE_DELAY_SECONDS, unless flush() or close() hurry it.
                self._lock.wait_for(lambda: self._hurry or self._closing, WRITE_DELAY_SECONDS)
                if not self._queued:
                    return  # closing, with everything written
                closing, self._hurry = self._closing, False
                batch = dict(self._queued)
                self._writing = True
            try:
                self._write(list(batch.values()))
            except Exception as err:  # the writer outlives a failed batch and retries it
                if self._failed(err, closing):
                    return
            else:
                self._written(batch)

    def _written(self, batch: dict[str, Recordable]) -> None:
        with self._lock:
            for run_id, result in batch.items():
                if self._queued.get(run_id) is result:
                    del self._queued[run_id]
            if self.failing is not None:
                log.warning("run records are written again (%d were waiting)", len(batch))
            self._writing, self._failures, self.failing = False, 0, None
            self._lock.notify_all()

    def _failed(self, err: Exception, closing: bool) -> bool:
        """Note a failed batch and wait before the next try; True when the writer should end."""
        with self._lock:
            self._writing = False
            self._failures += 1
            self.failing = f"{len(self._queued)} run record(s) cannot be written: {err}"
            if self._failures == 1:
                log.error("%s; they stay queued and are retried", self.failing)
            self._lock.notify_all()
            if closing:
                return True
            delay = RETRY_SECONDS[min(self._failures, len(RETRY_SECONDS)) - 1]
            self._lock.wait_for(lambda: self._closing, timeout=delay)
            return False


class QueuedWrites:
    """A store's save_later(), flush(), failing() and queued(), over its RecordQueue."""

    _queue: RecordQueue

    def save_later(self, record: Recordable) -> None:
        """Queue a record; get() sees it at once, recent() and totals() once written."""
        self._queue.add(record)

    def flush(self) -> None:
        self._queue.flush()

    def failing(self) -> str | None:
        return self._queue.failing

    def queued(self, run_id: str) -> dict[str, Any] | None:
        """A run's newest record while it waits for the writer, else None."""
        result = self._queue.queued(run_id)
        return None if result is None else result.to_dict()
