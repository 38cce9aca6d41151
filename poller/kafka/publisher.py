"""The daemon's side of Kafka (SPEC §10): a `kafka` chain entry publishes its input as one
message and waits for the broker's acknowledgement. One idempotent producer per client
pool, made on first use (confluent-kafka is imported only then) and flushed at close."""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from poller.config.kafka import KafkaSettings
from poller.errors import PollerError
from poller.kafka import LIBRDKAFKA_LOG
from poller.timeformat import json_default

if TYPE_CHECKING:
    from confluent_kafka import Producer

log = logging.getLogger(__name__)


class PublishError(PollerError):
    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"publishing to {topic} failed: {reason}")


class Publisher:
    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._producer: Producer | None = None

    def publish(self, topic: str, key: str | None, value: Any) -> dict[str, Any]:
        """Send `value` as JSON; {"topic", "partition", "offset"} once acknowledged.

        Raises PublishError (the broker's error, or no answer within
        settings.kafka.delivery_timeout_seconds).
        """
        from confluent_kafka import KafkaException

        body = json.dumps(value, default=json_default, separators=(",", ":")).encode()
        outcome: dict[str, Any] = {}

        def delivered(error: Any, message: Any) -> None:
            outcome.update(error=error, partition=message.partition(), offset=message.offset())

        producer = self._open()
        try:
            producer.produce(
                topic,
                value=body,
                key=None if key is None else key.encode(),
                on_delivery=delivered,
            )
            producer.flush(self.settings.delivery_timeout_seconds)
        except (KafkaException, BufferError) as err:
            raise PublishError(topic, str(err)) from None
        if not outcome:
            timeout = self.settings.delivery_timeout_seconds
            raise PublishError(topic, f"no acknowledgement within {timeout:g} s")
        if outcome["error"] is not None:
            raise PublishError(topic, str(outcome["error"]))
        return {"topic": topic, "partition": outcome["partition"], "offset": outcome["offset"]}

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            left = producer.flush(10)
            if left:
                log.error("%d Kafka message(s) not delivered at close", left)

    def _open(self) -> Producer:
        from confluent_kafka import Producer

        with self._lock:
            if self._producer is None:
                self._producer = Producer(self.settings.producer_config(LIBRDKAFKA_LOG))
            return self._producer
