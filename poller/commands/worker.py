"""`app.py worker`: one Kafka worker process (SPEC §10) on the config's settings.kafka, its
log in `worker.log` beside the daemon's, until SIGTERM or Ctrl-C (which drain)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from poller.clock import SystemClock
from poller.commands.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigSource, load, say
from poller.config.kafka import with_environment
from poller.errors import ConfigError, PollerError
from poller.logs import setup_logging
from poller.redaction import Redactor
from poller.store import open_store

if TYPE_CHECKING:
    from poller.kafka.worker import Worker


def cmd_worker(source: ConfigSource, args: argparse.Namespace) -> int:
    # The config's jobs are the daemon's: the worker needs none of their secrets.
    loaded = load(source, unset_ok=True)
    if isinstance(loaded, (str, ConfigError)):
        say(str(loaded))
        return EXIT_USAGE
    settings = loaded.settings
    kafka = with_environment(settings.kafka, os.environ)
    redactor = Redactor([*loaded.secret_values(), *kafka.secret_values()])
    log_file = Path(settings.log_file).with_name("worker.log")
    try:
        setup_logging(
            log_file,
            os.environ.get("LOG_FORMAT") or settings.log_format,
            (os.environ.get("LOG_LEVEL") or settings.log_level).upper(),
            settings.log_keep_days,
            stderr=True,
            redactor=redactor,
        )
    except (OSError, ValueError) as err:
        say(f"app.py worker: cannot write the log {log_file}: {err}")
        return EXIT_FAILED
    # Imported here: confluent-kafka loads librdkafka, which no other command needs.
    from poller.kafka.health import HealthServer, WorkerMetrics
    from poller.kafka.runs import Runner
    from poller.kafka.worker import Worker

    try:
        store = open_store(settings)
    except PollerError as err:
        say(f"app.py worker: {err}")
        return EXIT_FAILED
    executor = settings.executor
    if getattr(args, "runs", False) and executor.type != "kafka":
        say(
            f"app.py worker --runs: {source.path}: settings.executor.type is "
            f'"{executor.type}": the daemons run their own runs; set it to "kafka" '
            "(in the daemons' config too) for workers to run them"
        )
        store.close()
        return EXIT_USAGE
    clock = SystemClock()
    metrics = WorkerMetrics()
    name = f"{kafka.client_id}@{socket.gethostname()}/{os.getpid()}"
    workers = [
        Worker(
            kafka,
            store,
            redactor,
            clock,
            os.environ,
            metrics,
            runs=None
            if executor.type != "kafka"
            else (
                executor,
                Runner(store, clock, redactor, os.environ, loaded.base_dir, name, kafka),
            ),
            listing=not getattr(args, "runs", False),
        )
        for _ in range(getattr(args, "concurrency", 1))
    ]

    def stop(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = None
    if kafka.health_port is not None:
        try:
            server = HealthServer(
                kafka.health_host, kafka.health_port, [w.health for w in workers], metrics
            )
        except OSError as err:
            say(
                f"app.py worker: cannot listen on {kafka.health_host}:{kafka.health_port} "
                f"({err.strerror}); set settings.kafka.health_port (null: no health port)"
            )
            return EXIT_FAILED
    try:
        run_all(workers)
    finally:
        if server is not None:
            server.close()
        store.close()
    return EXIT_OK


def run_all(workers: list[Worker]) -> None:
    """Run each worker's loop on a thread of its own (the first on this one), until all
    have stopped; one that ends by an error stops the others."""
    errors: list[BaseException] = []

    def loop(worker: Worker) -> None:
        try:
            worker.run()
        except BaseException as err:
            errors.append(err)
            for other in workers:
                other.stop()

    threads = [
        threading.Thread(target=loop, args=(w,), name=f"consumer-{i}")
        for i, w in enumerate(workers[1:], 1)
    ]
    for thread in threads:
        thread.start()
    loop(workers[0])
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
