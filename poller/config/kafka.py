"""Models of the Kafka side (SPEC §10): `settings.kafka`, the environment variables that
override it, and a polling job as it arrives on `polling_topic`. They only describe and
validate; consuming and producing is poller.kafka's work.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from poller.config.base import Model
from poller.config.sources import SourceConfig

ENVIRONMENT = {
    "KAFKA_BOOTSTRAP_SERVERS": "bootstrap_servers",
    "KAFKA_CLIENT_ID": "client_id",
    "KAFKA_GROUP_ID": "group_id",
    "POLLING_QUEUE_TOPIC": "polling_topic",
    "FILE_EVENT_QUEUE_TOPIC": "file_event_topic",
}
"""The seed's environment variables, and the settings.kafka field each overrides."""
SECRET_CONFIG_WORDS = ("password", "secret", "key", "token", "credentials")
"""A librdkafka setting whose name holds one of these (sasl.password, ssl.key.pem) is secret."""


class KafkaSettings(Model):
    bootstrap_servers: str = Field("localhost:9092", min_length=1, description="host:port,…")
    client_id: str = Field("poller-worker", min_length=1)
    group_id: str = Field("poller-workers", min_length=1, description="The workers' group.")
    polling_topic: str = Field("polling-queue", min_length=1)
    file_event_topic: str = Field("file-event-queue", min_length=1)
    dlq_topic: str = Field("polling-queue.dlq", min_length=1, description="Dead letters.")
    config: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description='Extra librdkafka settings for every client ("security.protocol", '
        '"sasl.password": "${KAFKA_PASSWORD}", "session.timeout.ms", …).',
    )
    health_port: int | None = Field(
        8081,
        ge=0,
        le=65535,
        description="The worker's /health and /metrics port (0: a free one; null: none).",
    )
    health_host: str = Field("127.0.0.1", description="Where /health listens.")
    source_retries: int = Field(
        3, ge=0, le=20, description="Retries of a source that cannot be reached."
    )
    source_backoff_seconds: float = Field(
        1.0, gt=0, le=300, description="First retry delay, doubled each time."
    )
    delivery_timeout_seconds: float = Field(
        30, gt=0, le=600, description="How long a job's events may take to be acknowledged."
    )
    listing_keep_days: int = Field(
        30, ge=1, description="A source's listing state is forgotten after this long unpolled."
    )

    def secret_values(self) -> list[str]:
        return [
            str(value)
            for name, value in self.config.items()
            if any(word in name.lower() for word in SECRET_CONFIG_WORDS) and str(value)
        ]

    def client_config(self) -> dict[str, Any]:
        """The settings every client (consumer, producer, admin) starts from."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            **self.config,
        }

    def producer_config(self, logger: logging.Logger) -> dict[str, Any]:
        """Every producer's settings: idempotent, each message acknowledged by all
        replicas within delivery_timeout_seconds; librdkafka's own lines to `logger`."""
        return {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "delivery.timeout.ms": int(self.delivery_timeout_seconds * 1000),
            "logger": logger,
            **self.client_config(),
        }


def with_environment(settings: KafkaSettings, environ: Mapping[str, str]) -> KafkaSettings:
    """`settings` with the seed's environment variables, where set, taking precedence."""
    update = {field: environ[name] for name, field in ENVIRONMENT.items() if environ.get(name)}
    return settings.model_copy(update=update) if update else settings


class PollingJob(Model):
    """A message of `polling_topic`: which source to list, and which of its files."""

    job_id: str = Field(min_length=1, max_length=200)
    source_config: SourceConfig
    file_pattern: str = Field(
        "*", min_length=1, description='A glob over paths: "*.csv", "**/*.csv" (any depth).'
    )
    priority: int | str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="Copied into each event.")
    emit: Literal["new", "all"] = Field(
        "new", description='"new": only new or changed files; "all": every match, every time.'
    )


class LocalExecutorSettings(Model):
    """Runs on the daemon's own worker pool (the default)."""

    type: Literal["local"] = "local"


class KafkaExecutorSettings(Model):
    """Runs on `app.py worker` processes: the daemon publishes run requests, workers run
    the chains and publish the records (SPEC §11); the connection is settings.kafka's."""

    type: Literal["kafka"]
    runs_topic: str = Field("poller-runs", min_length=1, description="Run requests.")
    results_topic: str = Field("poller-results", min_length=1, description="Run records.")
    result_timeout_seconds: float = Field(
        3600,
        gt=0,
        description="A run with no result this long after its request (the job's "
        "timeout_seconds when set) is interrupted.",
    )

    @property
    def dlq_topic(self) -> str:
        """Where a request redelivered more than MAX_REDELIVERIES times goes."""
        return f"{self.runs_topic}.dlq"


ExecutorSettings = Annotated[
    LocalExecutorSettings | KafkaExecutorSettings, Field(discriminator="type")
]
