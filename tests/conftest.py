"""Shared fixtures: the stand-in platform server and a FakeClock that never really waits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.daemonproc import FUNCTIONS, DaemonProcess
from tests.kafkabroker import broker, topics  # noqa: F401 - fixtures of the worker tests
from tests.kafkaexec import deployment  # noqa: F401 - fixtures of the Kafka executor tests
from tests.pgcluster import pg_cluster, pg_url  # noqa: F401 - fixtures of the store tests
from tests.platform import PlatformServer
from tests.workerproc import workers  # noqa: F401


class FakeClock:
    """A Clock for tests: now() only moves when told; wait() records and advances at once."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = start or datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        self.waits: list[float] = []
        self.wakes = 0
        self.stopped = False

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, instant: datetime) -> None:
        with self._lock:
            self._now = instant

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def wait(self, seconds: float) -> bool:
        with self._lock:
            self.waits.append(seconds)
            self._now += timedelta(seconds=max(seconds, 0.0))
        return False

    def wake(self) -> None:
        with self._lock:
            self.wakes += 1

    def sleep(self, seconds: float) -> bool:
        """Advance at once, like wait(); True once stop() was called."""
        if self.stopped:
            return True
        self.wait(seconds)
        return False

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def platform() -> Iterator[PlatformServer]:
    """A fresh stand-in platform on 127.0.0.1, stopped after the test."""
    with PlatformServer() as server:
        yield server


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A config folder with steps.py (functions tick and nap) for daemon tests."""
    (tmp_path / "steps.py").write_text(FUNCTIONS)
    return tmp_path


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts; each is stopped afterwards."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.stop()
