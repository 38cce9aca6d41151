"""Runs on this process's bounded worker pool, with max_instances counted per job.

The daemon reserves a slot when it decides a fire will run (so later fires of the same
wake see it), and hands the claimed record over; the run's end goes to the store's
writer. A chain never runs on the loop thread.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from poller.clock import Clock
from poller.config.models import Config, Job
from poller.executors.pool import WorkerPool
from poller.executors.slots import Slots, record_end
from poller.monitor import Monitor
from poller.run.client import ClientPool
from poller.run.results import RunResult
from poller.store import Store

log = logging.getLogger(__name__)

RunChain = Callable[..., RunResult]


class LocalExecutor(Slots):
    """The worker pool, the runs going on per job, and the client pools they use."""

    def __init__(
        self,
        max_workers: int,
        store: Store,
        clock: Clock,
        run_chain: RunChain,
        on_done: Callable[[str], None],
        monitor: Monitor | None = None,
    ) -> None:
        super().__init__(on_done)
        self.pool = WorkerPool(max_workers, thread_name_prefix="run")
        self.store = store
        self.clock = clock
        self.run_chain = run_chain
        self.monitor = monitor  # change detection, alerts and pings around each run
        self._users: Counter[int] = Counter()  # runs using each client pool, by id()
        self._retired: list[ClientPool] = []

    def start(self, config: Config) -> None:
        """Nothing to begin: the pool's threads start as runs come."""

    def submit(self, job: Job, config: Config, clients: ClientPool, record: RunResult) -> None:
        """Run a claimed record's chain on the pool (its slot reserved before)."""
        with self._idle:
            self._users[id(clients)] += 1
        try:
            self.pool.submit(self._run, job, config, clients, record)
        except RuntimeError:  # stopping: the claim stays, as an interrupted run
            self._done(job.id, clients)
            reason = "the daemon was stopping; the run did not start"
            self.store.save_later(
                dataclasses.replace(
                    record, status="interrupted", finished_at=self.clock.now(), reason=reason
                )
            )

    def retire(self, clients: ClientPool) -> None:
        """Close a replaced client pool once no run uses it."""
        with self._idle:
            if self._users[id(clients)] > 0:
                self._retired.append(clients)
                return
        clients.close()

    def _run(self, job: Job, config: Config, clients: ClientPool, record: RunResult) -> None:
        monitor = self.monitor
        try:
            if monitor is not None:
                monitor.started(job)
            result = self.run_chain(
                job,
                config,
                clients,
                run_id=record.run_id,
                trigger=record.trigger,
                scheduled_for=record.scheduled_for,
                clock=self.clock,
                changes=None if monitor is None else monitor.changes,
                store=self.store,
            )
            self.on_result(result)
            record_end(job, result, self.store, monitor)
        except Exception:
            log.exception("job %s: run %s could not be recorded", job.id, record.run_id)
        finally:
            self._done(job.id, clients)

    def _done(self, job_id: str, clients: ClientPool) -> None:
        with self._idle:
            self._users[id(clients)] -= 1
            unused = clients in self._retired and self._users[id(clients)] <= 0
            if unused:
                self._retired.remove(clients)
                del self._users[id(clients)]
        if unused:
            clients.close()
        self.ended(job_id)

    def seen(self) -> list[dict[str, Any]]:
        """No Kafka workers: the runs are this process's."""
        return []

    def is_alive(self) -> bool:
        """False once the pool is shut down (stopping, or stopped)."""
        return not self.pool.is_shut_down

    def stop(self, grace_seconds: float) -> int:
        """Let runs finish up to the grace period, then shut the pool; how many were left."""
        left = self.wait_idle(grace_seconds)
        self.pool.shutdown()
        return left
