"""A worker's metrics (the seed's names) and its small HTTP port: `/health` (200 while the
consumer is polling, 503 before it starts, once it stalls, and while it drains) and
`/metrics` (Prometheus text). It serves nothing else and takes no request body."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

log = logging.getLogger(__name__)

STALL_SECONDS = 60.0
"""A consumer that has not polled for this long is unhealthy (a job may take longer: its
thread keeps polling while it works, so only a stuck loop stops this clock)."""


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.jobs = Counter("poller_jobs", "Polling jobs by outcome.", ["status"], registry=r)
        self.job_duration = Histogram(
            "poller_job_duration_seconds", "Time to handle one polling job.", registry=r
        )
        self.files_processed = Counter(
            "poller_files_processed", "Files listed that matched.", ["source_type"], registry=r
        )
        self.files_published = Counter(
            "poller_files_published", "File events published.", ["source_type"], registry=r
        )
        self.runs = Counter(
            "poller_worker_runs",
            "Run requests handled, by outcome (the run's status, dead, invalid, retry).",
            ["outcome"],
            registry=r,
        )
        self.active_jobs = Gauge("poller_active_jobs", "Jobs being handled now.", registry=r)
        self.consumed = Counter(
            "poller_kafka_messages_consumed", "Messages consumed.", ["topic"], registry=r
        )
        self.published = Counter(
            "poller_kafka_messages_published", "Messages acknowledged.", ["topic"], registry=r
        )
        self.connection_errors = Counter(
            "poller_connection_errors",
            "Failed attempts to reach a source.",
            ["source_type"],
            registry=r,
        )


@dataclass
class Health:
    """What /health reports; the worker's loop updates it."""

    is_started: bool = False
    is_draining: bool = False
    last_poll: float = 0.0
    assigned: list[str] = field(default_factory=list)
    broker_error: str | None = None
    """Set while no broker answers (librdkafka's error callback); cleared by an assignment."""

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def report(self) -> tuple[int, dict[str, Any]]:
        stalled = self.is_started and time.monotonic() - self.last_poll > STALL_SECONDS
        reason = None
        if self.is_draining:
            status = "draining"
        elif not self.is_started:
            status = "starting"
        elif stalled:
            status, reason = "unhealthy", f"the consumer has not polled for {STALL_SECONDS:g} s"
        elif self.broker_error is not None:
            status, reason = "unhealthy", f"no broker answers: {self.broker_error}"
        else:
            status = "healthy"
        body = {"status": status, "reason": reason, "assigned": list(self.assigned)}
        return (200 if status == "healthy" else 503), body


def combined(healths: Sequence[Health]) -> tuple[int, dict[str, Any]]:
    """One report for a worker's consumers (`--concurrency`): healthy while all are, else
    the first one's trouble; every consumer's partitions."""
    reports = [health.report() for health in healths]
    code, body = next(((c, b) for c, b in reports if c != 200), reports[0])
    assigned = sorted({p for _, b in reports for p in b["assigned"]})
    return code, {**body, "assigned": assigned}


class HealthServer:
    def __init__(
        self, host: str, port: int, healths: Sequence[Health], metrics: WorkerMetrics
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/health":
                    code, body = combined(healths)
                    self._answer(code, "application/json", json.dumps(body).encode())
                elif path == "/metrics":
                    self._answer(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
                else:
                    self._answer(404, "text/plain", b"not found\n")

            def _answer(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="worker-health", daemon=True
        )
        self._thread.start()
        log.info("health and metrics at %s/health", self.url)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
