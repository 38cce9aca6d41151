"""A worker's side of the Kafka executor (SPEC §11): what a run request becomes.

Before it runs anything, a request's delivery is counted (a store note under the run id,
so workers sharing state_db count together; it is dropped once the request is settled):
one delivered more than 1 + MAX_REDELIVERIES times has had a worker die under it each
time, and becomes a dead letter and a failed run instead. A request picked up later than
its job's misfire grace after its fire is a skipped run; one whose event the worker
cannot use (a `${NAME}` unset here, a job that does not validate) is a failed run whose
reason says why. Anything else runs as lambda_handler runs it, with the request's run id
(so the chain's X-Request-IDs are the same on every delivery), on client pools kept
between runs so a login serves many runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from poller.clock import Clock
from poller.config.kafka import KafkaSettings
from poller.config.models import Config
from poller.executors.messages import MAX_REDELIVERIES, RunOutcome, RunRequest
from poller.firing import ON_TIME_SECONDS
from poller.redaction import Redactor
from poller.run.chain import describe_error, run_job
from poller.run.client import ClientPool
from poller.run.invocation import EventError, Invocation, parse_event
from poller.run.results import skipped_result
from poller.store import Store, StoreError
from poller.timeformat import seconds_text, text

log = logging.getLogger(__name__)

DELIVERY_NOTE = "delivery of run "
"""The note (under the job's id) counting a request's deliveries, followed by its run id."""
OPEN_CLIENT_POOLS = 16
"""Environments kept logged in between runs, the least recently used closed first."""


class Runner:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        redactor: Redactor,
        environ: Mapping[str, str],
        config_dir: Path,
        name: str,
        kafka: KafkaSettings,
    ) -> None:
        self.store = store
        self.clock = clock
        self.redactor = redactor
        self.environ = environ
        self.config_dir = config_dir
        self.name = name  # the worker, as results name it
        self.kafka = kafka  # for chains' `kafka` entries
        self._pools: OrderedDict[str, ClientPool] = OrderedDict()

    def take(self, request: RunRequest) -> RunOutcome | tuple[Invocation, int]:
        """Count the delivery, and say whether the request runs: (what runs, its delivery),
        else the outcome it has without running."""
        delivery = self._count(request)
        now = self.clock.now()
        if delivery > 1 + MAX_REDELIVERIES:
            reason = (
                f"its run request was delivered {delivery} times (a worker stopped while "
                f"running it each time; at most {MAX_REDELIVERIES} redeliveries): "
                "it went to the dead-letter topic"
            )
            return self._ended(request, "failed", reason, delivery, True)
        try:
            event = request.lambda_event(str(self.config_dir))
            invocation = parse_event(event, self.environ, self.config_dir)
        except EventError as err:
            reason = f"worker {self.name} cannot run it: {err}"
            return self._ended(request, "failed", reason, delivery)
        job, due = invocation.job, request.scheduled_for
        if due is not None and request.trigger in ("schedule", "catch-up"):
            late = (now - due).total_seconds()
            if late > max(job.misfire_grace_seconds, ON_TIME_SECONDS):
                reason = (
                    f"misfire, picked up by a worker {seconds_text(round(late, 1))} after its "
                    f"fire, more than {seconds_text(job.misfire_grace_seconds)} late"
                )
                return self._ended(request, "skipped", reason, delivery)
        return invocation, delivery

    def run(self, invocation: Invocation, delivery: int) -> RunOutcome:
        """Run the chain (never raises: a failure is the run's record)."""
        config = invocation.config
        self.redactor.add(*config.secret_values())
        try:
            result = run_job(
                invocation.job,
                config,
                self._clients(config),
                run_id=invocation.run_id,
                trigger=invocation.trigger,
                scheduled_for=invocation.scheduled_for,
                clock=self.clock,
                store=self.store,
            )
        except Exception as err:  # the worker outlives any run
            log.exception("the run could not be completed")
            now = self.clock.now()
            result = dataclasses.replace(
                skipped_result(
                    invocation.job.id,
                    self.redactor.text(describe_error(err)),
                    trigger=invocation.trigger,
                    at=now,
                    scheduled_for=invocation.scheduled_for,
                    run_id=invocation.run_id,
                ),
                status="failed",
            )
        return RunOutcome(result, self.name, delivery)

    def settled(self, request: RunRequest) -> None:
        """The request is committed: forget its delivery count."""
        try:
            self.store.drop_note(request.job_id, DELIVERY_NOTE + request.run_id)
        except StoreError as err:
            log.warning("the delivery count of run %s was not dropped: %s", request.run_id, err)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def _count(self, request: RunRequest) -> int:
        name = DELIVERY_NOTE + request.run_id
        try:
            seen = self.store.note(request.job_id, name)
            delivery = (seen if isinstance(seen, int) else 0) + 1
            self.store.save_note(request.job_id, name, delivery)
        except StoreError as err:
            log.warning("the delivery of run %s was not counted: %s", request.run_id, err)
            return 1
        if delivery > 1:
            log.warning("run request delivered again (delivery %d)", delivery)
        else:
            log.info("run request taken (published %s)", text(request.published_at))
        return delivery

    def _clients(self, config: Config) -> ClientPool:
        """A client pool per environment (as configured here, secrets and all)."""
        key = hashlib.sha256(
            json.dumps(
                [config.model_dump(mode="json", include={"environments"}), config.secret_values()],
                sort_keys=True,
            ).encode()
        ).hexdigest()
        pool = self._pools.pop(key, None) or ClientPool(
            config.environments, self.clock, redactor=self.redactor, kafka=self.kafka
        )
        self._pools[key] = pool
        while len(self._pools) > OPEN_CLIENT_POOLS:
            self._pools.popitem(last=False)[1].close()
        return pool

    def unreadable(self, run_id: str, job_id: str, reason: str) -> RunOutcome:
        """The failed run of a request that cannot be decoded but names its run (the
        daemon keeps its own trigger and fire time)."""
        record = skipped_result(
            job_id, self.redactor.text(reason), trigger="manual", at=self.clock.now(), run_id=run_id
        )
        return RunOutcome(dataclasses.replace(record, status="failed"), self.name, 1, True)

    def _ended(
        self,
        request: RunRequest,
        status: Literal["failed", "skipped"],
        reason: str,
        delivery: int,
        dead_letter: bool = False,
    ) -> RunOutcome:
        record = skipped_result(
            request.job_id,
            self.redactor.text(reason),
            trigger=request.trigger,
            at=self.clock.now(),
            scheduled_for=request.scheduled_for,
            run_id=request.run_id,
        )
        if status == "failed":
            record = dataclasses.replace(record, status="failed")
        log.log(
            logging.WARNING if status == "failed" else logging.INFO,
            "run %s: %s",
            status,
            record.reason,
        )
        return RunOutcome(record, self.name, delivery, dead_letter)
