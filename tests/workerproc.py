"""A real `python app.py worker` in a subprocess, on a config of its own folder; waits on
its log with deadlines, and reads its /health and /metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.daemonproc import REPO, AppProcess, wait_until
from tests.kafkabroker import Topics

_HEALTH = re.compile(r"health and metrics at (http://\S+)/health")


class WorkerProcess(AppProcess):
    def __init__(
        self,
        folder: Path,
        kafka: dict[str, Any],
        env: dict[str, str] | None = None,
        settings: dict[str, Any] | None = None,
        args: tuple[str, ...] = (),
    ):
        """`settings` go over the config's (the executor, a shared state_db); `args` after
        `worker` (--runs)."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "settings": {
                "kafka": kafka,
                "state_db": "data/worker.db",
                "log_file": "logs/x.log",
                **(settings or {}),
            },
            "jobs": [],
        }
        self.args = args
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_url = ""

    @property
    def log_path(self) -> Path:
        return self.folder / "logs" / "worker.log"

    def start(self) -> WorkerProcess:
        """Start (or start again) the worker; returns once its health port is up."""
        starts = self.log().count("health and metrics at")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "worker", "--config", "config.json", *self.args],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "stderr.txt").open("wb"),
        )
        found = self.wait_log("health and metrics at", count=starts + 1)
        match = list(_HEALTH.finditer(found))[-1]
        self.health_url = match.group(1)
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 20.0, count: int = 1) -> str:
        def seen() -> str:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"the worker exited {self.proc.returncode}: "
                    + (self.folder / "stderr.txt").read_text()[-3000:]
                )
            log = self.log()
            return log if log.count(text) >= count else ""

        found: str = wait_until(seen, timeout, what=f"{count}x {text!r} in the worker's log")
        return found

    def health(self) -> tuple[int, dict[str, Any]]:
        answer = requests.get(self.health_url + "/health", timeout=5)
        return answer.status_code, answer.json()

    def metrics(self) -> str:
        return requests.get(self.health_url + "/metrics", timeout=5).text


MakeWorker = Callable[..., WorkerProcess]


@pytest.fixture
def workers(tmp_path: Path, topics: Topics) -> Iterator[MakeWorker]:
    """Starts workers on this test's topics (`workers("w2", source_retries=0)`, env too);
    stopped at the end."""
    started: list[WorkerProcess] = []

    def make(name: str = "w1", env: dict[str, str] | None = None, **kafka: Any) -> WorkerProcess:
        worker = WorkerProcess(tmp_path / name, topics.kafka_settings(client_id=name, **kafka), env)
        started.append(worker.start())
        return worker

    yield make
    for worker in started:
        worker.stop()
