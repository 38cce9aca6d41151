"""`app.py worker` (SPEC §10): consume polling jobs, list their sources, publish one event
per new or changed file, and commit a job's offset only once every event is acknowledged.

One loop, read top to bottom in `run`. A job is worked on a thread of its own while the
loop keeps polling, so a listing longer than `max.poll.interval.ms` keeps the consumer in
its group; one job is in hand at a time, and a message that comes meanwhile waits its
turn, in order (a partition with many waiting is paused until then). An invalid
job, or a source still down after its retries, goes to the dead-letter topic and is
committed: it cannot block its partition. Events that are not acknowledged leave the job
uncommitted; it is sought back and tried again. A stop (SIGTERM) lets the job in hand
finish, then flushes, commits and closes.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import SecretStr

from poller.clock import Clock
from poller.config.kafka import KafkaExecutorSettings, KafkaSettings, PollingJob
from poller.config.sources import SourceConfig, secret_values
from poller.executors.messages import InvalidMessageError, RunOutcome, RunRequest, request_ids
from poller.kafka import LIBRDKAFKA_LOG
from poller.kafka.health import Health, WorkerMetrics
from poller.kafka.jobs import InvalidJobError, dead_letter, parse_job
from poller.kafka.listing import Event, Listing, list_files, remember
from poller.kafka.runs import Runner
from poller.logs import origin_context, run_context
from poller.redaction import Redactor
from poller.sources import Source, SourceError, open_source
from poller.store import Store, StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")
KAFKA_LOG = logging.getLogger("librdkafka")
"""librdkafka's own lines (a broker down, a timed-out request), in the worker's log."""

POLL_SECONDS = 0.5
PRUNE_EVERY_SECONDS = 3600.0
PROBE_SECONDS = 5.0
"""While no broker answers, how often the loop asks whether one does again."""
WAITING_MAX = 100
"""A partition with this many messages waiting for the job in hand is paused meanwhile."""
OPEN_SOURCES = 16
"""Sources kept connected between jobs (by config), the least recently used closed first."""


class Encodable(Protocol):
    def encoded(self) -> tuple[bytes, bytes]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended: "done" (commit), "dead" (dead letter, then commit), "retry" (seek
    back: it comes again), "stopped" (left uncommitted for the next owner)."""

    kind: str
    reason: str = ""
    listing: Listing | None = None


@dataclass(frozen=True, slots=True)
class Place:
    """Where a consumed message came from (its origin in a dead letter)."""

    topic: str
    partition: int
    offset: int
    key: str | None

    @classmethod
    def of(cls, message: Message) -> Place:
        key = message.key()
        return cls(
            message.topic() or "",
            message.partition() or 0,
            message.offset() or 0,
            None if key is None else bytes(key).decode("utf-8", "replace"),
        )

    def at(self, offset: int) -> TopicPartition:
        return TopicPartition(self.topic, self.partition, offset)

    def origin(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
        }


def partition_of(message: Message) -> TopicPartition:
    return TopicPartition(message.topic() or "", message.partition() or 0)


def same_partition(one: Message, other: Message) -> bool:
    return (one.topic(), one.partition()) == (other.topic(), other.partition())


class SourcePool:
    """Open sources, reused by the jobs that name the same one; one job at a time uses them."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._open: OrderedDict[str, Source] = OrderedDict()

    def get(self, config: SourceConfig) -> Source:
        key = self._key(config)
        source = self._open.pop(key, None) or open_source(config, self._environ)
        self._open[key] = source
        while len(self._open) > OPEN_SOURCES:
            self._open.popitem(last=False)[1].close()
        return source

    def drop(self, config: SourceConfig) -> None:
        source = self._open.pop(self._key(config), None)
        if source is not None:
            source.close()

    @staticmethod
    def _key(config: SourceConfig) -> str:
        """One per source config, its secrets included (another password: another login;
        model_dump_json would show every SecretStr as the same mask)."""

        def plain(value: object) -> str:
            return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

        text = json.dumps(config.model_dump(), default=plain, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def close(self) -> None:
        for source in self._open.values():
            source.close()
        self._open.clear()


class Worker:
    def __init__(
        self,
        settings: KafkaSettings,
        store: Store,
        redactor: Redactor,
        clock: Clock,
        environ: Mapping[str, str],
        metrics: WorkerMetrics | None = None,
        *,
        runs: tuple[KafkaExecutorSettings, Runner] | None = None,
        listing: bool = True,
    ) -> None:
        """`runs`: also (or, without `listing`, only) run the chains of run requests."""
        self.settings = settings
        self.runs = runs
        self.listing = listing
        self.store = store
        self.redactor = redactor
        self.clock = clock
        self.environ = environ
        self.metrics = metrics or WorkerMetrics()
        self.health = Health()
        self.sources = SourcePool(environ)
        self._stopping = threading.Event()
        self._probed_at = 0.0
        self._waiting: deque[Message] = deque()
        """Messages that came while a job was in hand, in order."""
        self._paused: set[tuple[str, int]] = set()
        """Partitions paused until their waiting messages have had their turn."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")
        self.consumer = Consumer(
            {
                "group.id": settings.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # A dead worker's partitions move after 10 s, not librdkafka's 45 (the
                # loop polls even while a job runs, so a slow job never misses a beat).
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 3_000,
                "logger": LIBRDKAFKA_LOG,
                "error_cb": self._client_error,
                **settings.client_config(),
            }
        )
        self.producer = Producer(settings.producer_config(LIBRDKAFKA_LOG))

    def stop(self) -> None:
        """Finish the job in hand, then end (safe from a signal handler)."""
        self._stopping.set()

    def run(self) -> None:
        topics = [self.settings.polling_topic] if self.listing else []
        if self.runs is not None:
            topics.append(self.runs[0].runs_topic)
        self.consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked)
        log.info(
            "worker %s consuming %s in group %s from %s",
            self.settings.client_id,
            " and ".join(topics),
            self.settings.group_id,
            self.settings.bootstrap_servers,
        )
        self.health.polled()  # the stall clock starts now, not at the machine's boot
        self.health.is_started = True
        try:
            pruned_at = -PRUNE_EVERY_SECONDS
            while not self._stopping.is_set():
                if time.monotonic() - pruned_at >= PRUNE_EVERY_SECONDS:
                    pruned_at = time.monotonic()
                    self._prune()
                if self.health.broker_error is not None:
                    self._probe_broker()
                message = self._next()
                if message is None:
                    continue
                if message.error() is not None:
                    log.warning("consumer: %s", message.error())
                    continue
                self.metrics.consumed.labels(message.topic() or "").inc()
                if self.runs is not None and message.topic() == self.runs[0].runs_topic:
                    self._handle_run(message, *self.runs)
                else:
                    self._handle(message)
        finally:
            self.health.is_draining = True
            self._close()

    def _prune(self) -> None:
        """Forget the listings of sources not polled for listing_keep_days."""
        try:
            gone = self.store.prune_listings(self.settings.listing_keep_days, self.clock.now())
        except StoreError as err:
            log.warning("old listings were not pruned: %s", err)
            return
        if gone:
            log.info(
                "forgot the listings of %d source(s) not polled for %d days",
                gone,
                self.settings.listing_keep_days,
            )

    def _next(self) -> Message | None:
        """The next message: one that waited (its partition resumes when none of its own
        waits any more), else a fresh one."""
        if self._waiting:
            waited = self._waiting.popleft()
            key = (waited.topic() or "", waited.partition() or 0)
            if key in self._paused and not any(same_partition(m, waited) for m in self._waiting):
                self._paused.discard(key)
                self.consumer.resume([partition_of(waited)])
            return waited
        fresh = self.consumer.poll(POLL_SECONDS)
        self.health.polled()
        return fresh

    # --- one message -----------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        place = Place.of(message)
        with origin_context(place.topic, place.partition, place.offset):
            try:
                job = parse_job(message.value(), self.environ)
            except InvalidJobError as err:
                log.warning("invalid polling job: %s", self.redactor.text(err.reason))
                self.metrics.jobs.labels("invalid").inc()
                self._dead(place, message.value(), err.reason)
                return
            self.redactor.add(*secret_values(job.source_config))
            with run_context(job.job_id, "-"):
                outcome = self._while_polling(self._work, job)
                self._settle(place, message.value(), job, outcome)

    def _handle_run(
        self, message: Message, executor: KafkaExecutorSettings, runner: Runner
    ) -> None:
        """A run request: run its chain (or say why not), publish the run's record on
        results_topic, and only then commit; a record not acknowledged seeks back."""
        place, value = Place.of(message), message.value()
        with origin_context(place.topic, place.partition, place.offset):
            try:
                request = RunRequest.decode(value)
            except InvalidMessageError as err:
                log.warning("%s", self.redactor.text(str(err)))
                self.metrics.runs.labels("invalid").inc()
                ids = request_ids(value)
                if ids is not None:  # its daemon waits for it: say it failed, and why
                    outcome = runner.unreadable(*ids, str(err))
                    if self._publish(executor.results_topic, (outcome,)):
                        self.consumer.seek(place.at(place.offset))
                        return
                self._dead(place, value, str(err), executor.dlq_topic)
                return
            with run_context(request.job_id, request.run_id):
                taken = runner.take(request)
                if not isinstance(taken, RunOutcome):  # it runs: (invocation, delivery)
                    taken = self._while_polling(runner.run, *taken)
                self._finish_run(place, value, request, taken, executor, runner)

    def _finish_run(
        self,
        place: Place,
        value: bytes | None,
        request: RunRequest,
        outcome: RunOutcome,
        executor: KafkaExecutorSettings,
        runner: Runner,
    ) -> None:
        if self._publish(executor.results_topic, (outcome,)):
            log.warning("the run's record was not acknowledged; the request comes again")
            self.metrics.runs.labels("retry").inc()
            self.consumer.seek(place.at(place.offset))
            self._stopping.wait(self.settings.source_backoff_seconds)
            return
        self.metrics.runs.labels("dead" if outcome.dead_letter else outcome.record.status).inc()
        if outcome.dead_letter:
            self._dead(place, value, outcome.record.reason or "", executor.dlq_topic)
        else:
            self._commit(place)
        runner.settled(request)

    def _while_polling(self, work: Callable[..., T], *args: Any) -> T:
        """Run the job on its thread; meanwhile poll to stay in the group. A message that
        comes meanwhile waits its turn, in order; a partition with WAITING_MAX of them is
        paused until they have had it. Partitions are not paused otherwise: a resumed
        partition's fetch takes up to a second to start again (a seek would start it
        over too), and the next job should be at hand when this one ends."""
        paused: set[tuple[str, int]] = set()
        self.metrics.active_jobs.inc()
        began = time.monotonic()
        try:
            # The job's thread logs in this one's context (its job and Kafka origin).
            context = contextvars.copy_context()
            future: Future[T] = self._thread.submit(context.run, work, *args)
            while True:
                try:  # the job's end wakes this at once: the next one starts without a wait
                    return future.result(timeout=POLL_SECONDS)
                except TimeoutError:
                    pass
                self.health.polled()
                while (early := self.consumer.poll(0)) is not None:
                    if early.error() is not None:
                        continue
                    self._waiting.append(early)
                    key = (early.topic() or "", early.partition() or 0)
                    if key not in paused and self._waiting_in(key) >= WAITING_MAX:
                        paused.add(key)
                        self.consumer.pause([partition_of(early)])
        finally:
            self.metrics.active_jobs.dec()
            self.metrics.job_duration.observe(time.monotonic() - began)
            self._paused |= paused

    def _waiting_in(self, key: tuple[str, int]) -> int:
        return sum(1 for m in self._waiting if (m.topic(), m.partition()) == key)

    def _work(self, job: PollingJob) -> Outcome:
        """List the source (with retries), publish the events, remember the listing."""
        kind = job.source_config.source_type
        delay = self.settings.source_backoff_seconds
        for attempt in range(self.settings.source_retries + 1):
            try:
                source = self.sources.get(job.source_config)
                log.info("listing %s for %s", source.identity, job.file_pattern)
                listing = list_files(job, source, self.store, self.clock.now())
                break
            except SourceError as err:
                self.sources.drop(job.source_config)
                self.metrics.connection_errors.labels(kind).inc()
                reason = self.redactor.text(err.reason)
                if not err.is_retryable or attempt == self.settings.source_retries:
                    return Outcome("dead", f"{self.redactor.text(err.source)}: {reason}")
                log.warning(
                    "listing failed (%s); attempt %d again in %gs", reason, attempt + 2, delay
                )
                if self._stopping.wait(delay):
                    return Outcome("stopped", "stopped while the source was down")
                delay *= 2
            except StoreError as err:
                return Outcome("retry", f"the listing state cannot be read: {err}")
        self.metrics.files_processed.labels(kind).inc(listing.matched)
        failed = self._publish(self.settings.file_event_topic, listing.events)
        if failed:
            return Outcome("retry", f"{failed} of {len(listing.events)} events not acknowledged")
        self.metrics.files_published.labels(kind).inc(len(listing.events))
        try:
            remember(listing, self.store, self.clock.now())
        except StoreError as err:
            log.warning("the listing state was not saved (%s); its events may come again", err)
        return Outcome("done", listing=listing)

    def _publish(self, topic: str, events: Sequence[Encodable]) -> int:
        """Produce `events` and wait for every acknowledgement; how many failed."""
        errors: list[KafkaError] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                errors.append(error)

        for event in events:
            key, value = event.encoded()
            while True:
                try:
                    self.producer.produce(topic, value=value, key=key, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self.producer.poll(0.1)
            self.producer.poll(0)
        left = self.producer.flush(self.settings.delivery_timeout_seconds)
        if errors:
            log.warning("publishing to %s failed: %s", topic, errors[0])
        acknowledged = len(events) - len(errors) - left
        self.metrics.published.labels(topic).inc(acknowledged)
        return len(events) - acknowledged

    def _settle(self, place: Place, value: bytes | None, job: PollingJob, outcome: Outcome) -> None:
        if outcome.kind == "done" and outcome.listing is not None:
            self.metrics.jobs.labels("done").inc()
            log.info(
                "listed %d matching file(s) of %s, published %d event(s)",
                outcome.listing.matched,
                job.source_config.source_type,
                len(outcome.listing.events),
            )
            self._commit(place)
        elif outcome.kind == "dead":
            log.warning("dead letter: %s", outcome.reason)
            self.metrics.jobs.labels("dead").inc()
            self._dead(place, value, outcome.reason)
        elif outcome.kind == "retry":
            log.warning("not done (%s); it comes again", outcome.reason)
            self.metrics.jobs.labels("retry").inc()
            self.consumer.seek(place.at(place.offset))
            self._stopping.wait(self.settings.source_backoff_seconds)
        else:
            log.info("left for the next worker: %s", outcome.reason)

    def _dead(
        self, place: Place, value: bytes | None, reason: str, topic: str | None = None
    ) -> None:
        """Publish a dead letter (to the polling jobs' topic unless told), then commit."""
        now = self.clock.now()
        letter = dead_letter(
            reason, place.origin(), value, self.redactor, self.settings.client_id, now
        )
        if self._publish(topic or self.settings.dlq_topic, (Event(place.key or "", letter),)):
            log.error("the dead letter could not be published; the job comes again")
            self.consumer.seek(place.at(place.offset))
            return
        self._commit(place)

    def _commit(self, place: Place) -> None:
        try:
            self.consumer.commit(offsets=[place.at(place.offset + 1)], asynchronous=False)
        except KafkaException as err:
            # The partition moved to another worker meanwhile: it does the job again.
            log.warning("commit of offset %d failed: %s", place.offset + 1, err)

    # --- the group -------------------------------------------------------------------

    def _probe_broker(self) -> None:
        """While every broker is down, ask for metadata now and then: an answer means the
        broker is back (an assigned worker gets no new assignment to say so)."""
        now = time.monotonic()
        if now - self._probed_at < PROBE_SECONDS:
            return
        self._probed_at = now
        try:
            self.consumer.list_topics(self.settings.polling_topic, timeout=1)
        except KafkaException:
            return
        log.info("the broker answers again")
        self.health.broker_error = None

    def _client_error(self, error: KafkaError) -> None:
        """librdkafka's global errors: every broker down makes /health say so."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.health.broker_error = error.str()
        log.warning("kafka: %s", error.str())

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called before the client takes the partitions on: assignment() is not yet theirs.
        names = [f"{p.topic}/{p.partition}" for p in partitions]
        log.info("assigned %s", ", ".join(names) or "nothing")
        self.health.broker_error = None  # a group coordinator answered
        self.health.assigned = sorted({*self.health.assigned, *names})

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        # Their new owner starts from the last commit: what waited here is its to do.
        kept = [m for m in self._waiting if (m.topic(), m.partition()) not in gone]
        self._waiting = deque(kept)
        self._paused -= gone
        names = {f"{p.topic}/{p.partition}" for p in partitions}
        log.info("revoked %s", ", ".join(sorted(names)) or "nothing")
        self.health.assigned = [name for name in self.health.assigned if name not in names]

    def _close(self) -> None:
        left = self.producer.flush(10)
        if left:
            log.error("%d message(s) not delivered at stop", left)
        self.consumer.close()  # leaves the group at once: its partitions move now
        self._thread.shutdown(wait=True)
        self.sources.close()
        if self.runs is not None:
            self.runs[1].close()
        log.info("worker stopped")
