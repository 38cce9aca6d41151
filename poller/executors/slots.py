"""What every executor shares: the runs going on per job (max_instances), and the hooks
the daemon and its metrics are told through."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from poller.config.models import Config, Job
from poller.run.results import RunResult

if TYPE_CHECKING:
    from poller.monitor import Monitor, Send
    from poller.run.client import ClientPool
    from poller.store import Store

log = logging.getLogger(__name__)


def record_end(job: Job, result: RunResult, store: Store, monitor: Monitor | None) -> None:
    """A run's end as every executor records it: its alerts decided (a failure to decide
    them never costs the run its record), the record saved before any delivery updates
    it, then the alerts sent."""
    sends: list[Send] = []
    if monitor is not None:
        try:
            result, sends = monitor.after_run(job, result)
        except Exception:
            log.exception("job %s: run %s: deciding its alerts failed", job.id, result.run_id)
    store.save_later(result)
    if sends and monitor is not None:
        monitor.dispatch(result, sends)


class Slots:
    """Runs going on (or reserved) per job, and a condition notified when one ends."""

    def __init__(self, on_done: Callable[[str], None]) -> None:
        self._on_done = on_done  # told the job id when a run ends
        self.on_result: Callable[[RunResult], None] = lambda result: None
        """Told of each run's record as it ends (poller.api.metrics counts them)."""
        self.counts: Counter[str] = Counter()
        """Kafka: published, failed_to_publish, recorded, duplicates, late, invalid,
        redeliveries, dead_letters, timed_out (for /metrics)."""
        self._running: Counter[str] = Counter()
        self._idle = threading.Condition(threading.Lock())

    def reserve(self, job: Job) -> int | None:
        """Take a slot of the job's max_instances: None when taken, else how many run."""
        with self._idle:
            running = self._running[job.id]
            if running >= job.max_instances:
                return running
            self._running[job.id] = running + 1
            return None

    def release(self, job_id: str) -> None:
        """Give back a slot reserved for a run that will not start."""
        with self._idle:
            self._running[job_id] -= 1

    def is_full(self, job: Job) -> bool:
        with self._idle:
            return self._running[job.id] >= job.max_instances

    def running(self, job_id: str) -> int:
        """Runs of this job going on now."""
        with self._idle:
            return self._running[job_id]

    def inflight(self) -> int:
        with self._idle:
            return sum(self._running.values())

    def ended(self, job_id: str) -> None:
        """A run's slot is free again."""
        with self._idle:
            self._running[job_id] -= 1
            self._idle.notify_all()
        self._on_done(job_id)

    def wait_idle(self, grace_seconds: float) -> int:
        """Wait up to the grace period for every run to end; how many are left."""
        deadline = time.monotonic() + grace_seconds
        with self._idle:
            while sum(self._running.values()) and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            return sum(self._running.values())


class Executor(Protocol):
    """What the daemon and its firing rules ask of where runs run."""

    on_result: Callable[[RunResult], None]
    counts: Counter[str]

    def start(self, config: Config) -> None: ...
    def reserve(self, job: Job) -> int | None: ...
    def release(self, job_id: str) -> None: ...
    def is_full(self, job: Job) -> bool: ...
    def running(self, job_id: str) -> int: ...
    def inflight(self) -> int: ...
    def submit(self, job: Job, config: Config, clients: ClientPool, record: RunResult) -> None: ...
    def retire(self, clients: ClientPool) -> None: ...
    def is_alive(self) -> bool: ...
    def stop(self, grace_seconds: float) -> int: ...
    def seen(self) -> list[dict[str, Any]]: ...
