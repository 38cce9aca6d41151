"""Runs on `app.py worker` processes over Kafka (SPEC §11): the daemon's side.

`submit` publishes the claimed run as a request on runs_topic (keyed by run id) and keeps
it pending, its slot of max_instances held. One thread reads results_topic: a result of a
pending run is that run's end — change detection, alerts and the record happen here, as
the local pool does them after a chain — and frees its slot. The first result of a run
wins; a later one (a redelivered request run twice) is logged and dropped, as is one that
comes after its run timed out. A run with no result by its deadline (the job's
timeout_seconds, else result_timeout_seconds, from publish) is interrupted.

The results topic is read from its start at boot, without a consumer group: every daemon
sees every result (each records only the runs it published, by key) and needs no group
join before it can record one. Results of other runs are skipped by their key, unread;
keep the topic's retention short (an hour past result_timeout_seconds is plenty).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from poller.clock import Clock
from poller.config.kafka import KafkaExecutorSettings, KafkaSettings
from poller.config.models import Config, Job
from poller.executors.messages import WORKERS_NOTE, InvalidMessageError, RunOutcome, RunRequest
from poller.executors.slots import Slots, record_end
from poller.kafka import LIBRDKAFKA_LOG
from poller.monitor import Monitor
from poller.redaction import Redactor
from poller.run.chain import blackout_of, redact_step
from poller.run.changes import changed_items, paths_changed
from poller.run.client import ClientPool
from poller.run.results import RunResult, RunStatus
from poller.store import Store, StoreError
from poller.timeformat import seconds_text, text, utc_text

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
"""How often the results thread looks at deadlines while no result comes."""
WORKERS_SAVE_SECONDS = 10.0
"""How often at most the workers seen are written to the store."""
REMEMBER_ENDED = 10_000
"""Runs whose end is remembered, to tell a duplicate or late result from another's."""
ASSIGN_RETRY_SECONDS = 5.0
"""While the results topic is missing, how often the daemon looks for it again."""


@dataclass(slots=True)
class Pending:
    job: Job
    record: RunResult
    published_at: datetime
    deadline: datetime


@dataclass(slots=True)
class WorkerSeen:
    """A worker as the results topic shows it, for /status."""

    name: str
    last_seen: datetime
    results: int = 0


class KafkaExecutor(Slots):
    """Run requests out, results in; the runs waiting for their result."""

    def __init__(
        self,
        settings: KafkaExecutorSettings,
        kafka: KafkaSettings,
        store: Store,
        clock: Clock,
        redactor: Redactor,
        on_done: Callable[[str], None],
        monitor: Monitor | None = None,
    ) -> None:
        super().__init__(on_done)
        self.settings = settings
        self.kafka = kafka
        self.store = store
        self.clock = clock
        self.redactor = redactor
        self.monitor = monitor
        self.name = f"daemon-{uuid.uuid4().hex[:12]}"  # who published a request
        self.config: Config | None = None  # the running config (results use its jobs)
        self.workers: dict[str, WorkerSeen] = {}
        self._pending: dict[str, Pending] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()  # run id -> how it ended
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._assigned = False
        self._workers_saved_at = 0.0
        self._assigned_at = 0.0
        self.producer = Producer(kafka.producer_config(LIBRDKAFKA_LOG))
        self.consumer = Consumer(
            {
                "group.id": self.name,  # required by librdkafka; never joined (assign)
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "logger": LIBRDKAFKA_LOG,
                **kafka.client_config(),
            }
        )

    # --- start and stop ----------------------------------------------------------------

    def start(self, config: Config) -> None:
        """Read results from the start; begin the results thread."""
        self.config = config
        self._assign()
        self._thread = threading.Thread(target=self._read_results, name="results", daemon=True)
        self._thread.start()

    def _assign(self) -> None:
        """Take every partition of the results topic, once it exists."""
        self._assigned_at = time.monotonic()
        topic = self.settings.results_topic
        partitions = self._partitions(topic)
        if not partitions:
            return
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._assigned = True
        log.info(
            "runs go to Kafka workers: requests on %s, results from %s (%d partition(s)) at %s",
            self.settings.runs_topic,
            topic,
            len(partitions),
            self.kafka.bootstrap_servers,
        )

    def _partitions(self, topic: str) -> list[int]:
        """The topic's partitions; none (logged) while it or the broker is missing."""
        try:
            metadata = self.consumer.list_topics(topic, timeout=5)
            found = metadata.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return sorted(found.partitions)
            why = "it does not exist"
        except KafkaException as err:
            why = f"the broker cannot be reached: {err}"
        log.error(
            "kafka: no results can be read from %s (%s); `app.py kafka check "
            "--create-topics` makes the executor's topics; tried again every %gs",
            topic,
            why,
            ASSIGN_RETRY_SECONDS,
        )
        return []

    def is_alive(self) -> bool:
        return not self._stopping.is_set()

    def stop(self, grace_seconds: float) -> int:
        """Wait up to the grace period for pending results; how many never came (their
        runs go on on the workers, but the daemon records them interrupted)."""
        left = self.wait_idle(grace_seconds)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.workers:
            self._save_workers()
        undelivered = self.producer.flush(5)
        if undelivered:
            log.error("kafka: %d run request(s) were not delivered at stop", undelivered)
        self.consumer.close()
        return left

    def retire(self, clients: ClientPool) -> None:
        """Runs here use no client pool: a replaced one closes now."""
        clients.close()

    # --- requests out -----------------------------------------------------------------

    def submit(self, job: Job, config: Config, clients: ClientPool, record: RunResult) -> None:
        """Publish a claimed run's request (its slot reserved before)."""
        self.config = config
        now = self.clock.now()
        timeout = job.timeout_seconds or self.settings.result_timeout_seconds
        request = RunRequest.of(config, job, record, self.name, now)
        with self._idle:
            self._pending[record.run_id] = Pending(
                job, record, now, now + timedelta(seconds=timeout)
            )
        blackout = blackout_of(job, config, record.scheduled_for or record.started_at)
        if blackout:  # skipped here, as run_job would skip it: no request to publish
            self._end(record.run_id, "skipped", blackout, how="skipped", level=logging.INFO)
            return
        if self.monitor is not None:
            self.monitor.started(job)
        key, value = request.encoded()
        try:
            self.producer.produce(
                self.settings.runs_topic,
                value=value,
                key=key,
                on_delivery=lambda error, message: self._delivered(record.run_id, error),
            )
        except (BufferError, KafkaException) as err:
            self._delivered(record.run_id, err)
        self.producer.poll(0)

    def _delivered(self, run_id: str, error: KafkaError | Exception | None) -> None:
        if error is None:
            self.counts["published"] += 1
            return
        self.counts["failed_to_publish"] += 1
        why = error.str() if isinstance(error, KafkaError) else str(error)
        self._end(run_id, "failed", f"its run request could not be published to Kafka: {why}")

    # --- results in -------------------------------------------------------------------

    def _read_results(self) -> None:
        while not self._stopping.is_set():
            try:
                if (
                    not self._assigned
                    and time.monotonic() - self._assigned_at >= ASSIGN_RETRY_SECONDS
                ):
                    self._assign()
                message = self.consumer.poll(POLL_SECONDS)
                self.producer.poll(0)  # delivery reports of requests
                if message is not None and message.error() is None:
                    self._result(message)
                self._expire(self.clock.now())
            except Exception:  # the thread outlives any message
                log.exception("kafka: a run result could not be handled")

    def _result(self, message: Message) -> None:
        key = (message.key() or b"").decode("utf-8", "replace")
        with self._idle:
            pending = self._pending.get(key)
            ended = self._ended.get(key)
        if pending is None and ended is None:
            return  # another daemon's run, or a past one's: not read
        try:
            outcome = RunOutcome.decode(message.value())
        except InvalidMessageError as err:
            self.counts["invalid"] += 1
            log.warning("kafka: %s (key %s)", err, key[:80])
            return
        if outcome.record.run_id != key:
            self.counts["invalid"] += 1
            log.warning(
                "kafka: a result keyed %s is of run %s; dropped", key[:80], outcome.record.run_id
            )
            return
        self._seen(outcome)
        if pending is None:
            self.counts["duplicates" if ended == "recorded" else "late"] += 1
            log.log(
                logging.INFO if ended == "recorded" else logging.WARNING,
                "job %s: run %s: another result (%s, from %s, delivery %d) dropped: the run %s",
                outcome.record.job_id,
                key,
                outcome.record.status,
                outcome.worker or "a worker",
                outcome.delivery,
                "has its first result recorded" if ended == "recorded" else ended,
            )
            return
        if outcome.delivery > 1:
            self.counts["redeliveries"] += outcome.delivery - 1
        if outcome.dead_letter:
            self.counts["dead_letters"] += 1
        self.counts["recorded"] += 1
        self._record(pending, outcome)

    def _seen(self, outcome: RunOutcome) -> None:
        name = outcome.worker or "unnamed worker"
        now = self.clock.now()
        seen = self.workers.get(name)
        if seen is None:
            seen = self.workers[name] = WorkerSeen(name, now)
            log.info("kafka: worker %s answers on %s", name, self.settings.results_topic)
        seen.last_seen = now
        seen.results += 1
        if time.monotonic() - self._workers_saved_at >= WORKERS_SAVE_SECONDS:
            self._save_workers()

    def seen(self) -> list[dict[str, Any]]:
        """The workers seen on the results topic, the latest first (GET /status)."""
        found = sorted(self.workers.values(), key=lambda w: w.last_seen, reverse=True)
        return [
            {"name": w.name, "last_seen": utc_text(w.last_seen), "results": w.results}
            for w in found
        ]

    def _save_workers(self) -> None:
        self._workers_saved_at = time.monotonic()
        try:
            self.store.save_note(*WORKERS_NOTE, self.seen())
        except StoreError as err:
            log.warning("the workers seen were not saved: %s", err)

    def _record(self, pending: Pending, outcome: RunOutcome) -> None:
        """A run's first result: its changes, alerts and record, as the local pool's."""
        claimed, scrub = pending.record, self.redactor
        got = outcome.record
        result = dataclasses.replace(
            got,
            job_id=claimed.job_id,
            trigger=claimed.trigger,
            scheduled_for=claimed.scheduled_for,
            reason=None if got.reason is None else scrub.text(got.reason),
            steps=tuple(redact_step(step, scrub) for step in got.steps),
            output=None if got.output is None else scrub.value(got.output),
            errors=tuple(scrub.text(error) for error in got.errors),
        )
        job = self._job(pending)
        result = self._compared(job, result)
        if not self._claim_end(claimed.run_id, "recorded"):
            return
        self._finish(job, result)

    def _compared(self, job: Job, result: RunResult) -> RunResult:
        """Change detection, on the daemon: its baseline is the daemon's to keep."""
        monitor = self.monitor
        if (
            monitor is None
            or result.status != "success"
            or not job.detect_changes
            or result.dry_run
        ):
            return result
        comparison = monitor.changes.compare(job, result.output, result.run_id)
        if comparison is None:
            return result
        if comparison.changed:
            log.info(
                "job %s: run %s: change detected: %d path(s) differ from run %s",
                job.id,
                result.run_id,
                paths_changed(comparison.diff),
                comparison.against,
            )
        return dataclasses.replace(
            result,
            changed=comparison.changed,
            diff=comparison.diff,
            changes_detected=changed_items(comparison.diff) if comparison.changed else 0,
        )

    def _expire(self, now: datetime) -> None:
        with self._idle:
            expired = [run_id for run_id, p in self._pending.items() if p.deadline <= now]
        for run_id in expired:
            with self._idle:
                pending = self._pending.get(run_id)
            if pending is None:
                continue
            waited = (now - pending.published_at).total_seconds()
            self.counts["timed_out"] += 1
            self._end(
                run_id,
                "interrupted",
                f"no worker's result within {seconds_text(round(waited))} of its run request "
                f"(published {text(pending.published_at)}); a result coming later is not "
                "recorded",
                how="timed out",
            )

    def _end(
        self,
        run_id: str,
        status: RunStatus,
        reason: str,
        how: str = "not published",
        level: int = logging.WARNING,
    ) -> None:
        """End a pending run without a worker's record (a blackout, not published, timed
        out)."""
        with self._idle:
            pending = self._pending.get(run_id)
        if pending is None or not self._claim_end(run_id, how):
            return
        log.log(level, "job %s: run %s %s: %s", pending.job.id, run_id, status, reason)
        result = dataclasses.replace(
            pending.record, status=status, reason=reason, finished_at=self.clock.now()
        )
        self._finish(self._job(pending), result)

    def _claim_end(self, run_id: str, how: str) -> bool:
        """Take a run out of the pending ones (once: False if it already ended)."""
        with self._idle:
            if self._pending.pop(run_id, None) is None:
                return False
            self._ended[run_id] = how
            while len(self._ended) > REMEMBER_ENDED:
                self._ended.popitem(last=False)
        return True

    def _finish(self, job: Job, result: RunResult) -> None:
        try:
            self.on_result(result)
            monitor = self.monitor
            if result.status == "skipped":  # a misfire (picked up late) may alert
                self.store.save_later(result)
                if monitor is not None:
                    monitor.after_skip(job, result)
                return
            record_end(job, result, self.store, monitor)
        except Exception:
            log.exception("job %s: run %s could not be recorded", job.id, result.run_id)
        finally:
            self.ended(job.id)

    def _job(self, pending: Pending) -> Job:
        """The job as the running config has it now (alerts, detect_changes), else as
        it was when its run was published (a job removed meanwhile)."""
        config = self.config
        if config is None:
            return pending.job
        return config.job_map.get(pending.job.id, pending.job)
