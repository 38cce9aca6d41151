"""A deployment of the Kafka executor for tests: a real `python app.py` daemon with
settings.executor kafka, real `app.py worker` processes, the Tansu broker (tests/
kafkabroker.py) with this test's own topics, and the stand-in platform.

The daemon cannot reach the platform: its environment says PLATFORM_URL is a closed port
and its PLATFORM_PW is wrong, while the workers' say the real ones. The run requests carry
`${PLATFORM_URL}` and `${PLATFORM_PW}` as written, so a run that reaches the platform was
run by a worker, with the worker's secrets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiproc import API_KEY, FUNCTIONS, ApiDaemon, api_settings
from tests.daemonproc import DaemonProcess
from tests.kafkabroker import Topics, create_topics
from tests.platform import PlatformServer
from tests.receivers import unused_port
from tests.workerproc import WorkerProcess

PASSWORD = "platform-password-31"  # the stand-in platform's
ENVIRONMENTS = {
    "live": {
        "base_url": "${PLATFORM_URL}",
        "retries": 0,
        "timeout_seconds": 10,
        "auth": {
            "type": "session",
            "login_path": "/login",
            "username": "alice",
            "password": "${PLATFORM_PW}",
        },
    }
}
STEPS = (
    FUNCTIONS
    + """
import os

def die(data, context):
    os._exit(9)  # a worker killed mid-run (the OOM killer, a node lost)
"""
)


class Deployment:
    def __init__(self, tmp_path: Path, topics: Topics, platform: PlatformServer) -> None:
        self.tmp_path = tmp_path
        self.topics = topics
        self.platform = platform
        name = uuid.uuid4().hex[:8]
        self.runs_topic, self.results_topic = f"runs-{name}", f"results-{name}"
        self.dlq_topic = f"{self.runs_topic}.dlq"
        create_topics(
            topics.bootstrap, {self.runs_topic: 4, self.results_topic: 2, self.dlq_topic: 1}
        )
        self.started: list[DaemonProcess | WorkerProcess] = []

    def executor(self, **fields: Any) -> dict[str, Any]:
        return {
            "type": "kafka",
            "runs_topic": self.runs_topic,
            "results_topic": self.results_topic,
            **fields,
        }

    def config(
        self, jobs: list[dict[str, Any]], executor: dict[str, Any] | None = None, **settings: Any
    ) -> dict[str, Any]:
        return {
            "settings": {
                "timezone": "UTC",
                "api": api_settings(),
                "kafka": self.topics.kafka_settings(client_id="daemon"),
                "executor": executor or self.executor(),
                **settings,
            },
            "environments": ENVIRONMENTS,
            "jobs": jobs,
        }

    def daemon(self, jobs: list[dict[str, Any]], **settings: Any) -> ApiDaemon:
        folder = self.tmp_path / "daemon"
        folder.mkdir(exist_ok=True)
        (folder / "steps.py").write_text(STEPS)
        env = {
            "POLLER_API_KEY": API_KEY,
            "PLATFORM_URL": f"http://127.0.0.1:{unused_port()}",
            "PLATFORM_PW": "the-daemon-does-not-know-it",
        }
        process = DaemonProcess(folder, self.config(jobs, **settings), env=env)
        self.started.append(process)
        process.start()
        assert process.proc is not None and process.proc.poll() is None, process.stderr()
        process.wait_log("runs go to Kafka workers", timeout=20)
        return ApiDaemon(process, API_KEY)

    def worker(self, name: str, *args: str, **kafka: Any) -> WorkerProcess:
        folder = self.tmp_path / name
        folder.mkdir(exist_ok=True)
        (folder / "steps.py").write_text(STEPS)
        worker = WorkerProcess(
            folder,
            self.topics.kafka_settings(client_id=name, **kafka),
            env={"PLATFORM_URL": self.platform.url, "PLATFORM_PW": PASSWORD},
            settings={
                "timezone": "UTC",
                "executor": self.executor(),
                # Workers sharing state_db count a request's deliveries together.
                "state_db": str(self.tmp_path / "workers.db"),
            },
            args=args,
        )
        self.started.append(worker.start())
        return worker

    def messages(self, topic: str) -> list[bytes]:
        """Every message of a topic, raw."""
        count = self.topics.count(topic, settle=0.5)
        if not count:
            return []
        return [json.dumps(m["value"]).encode() for m in self.topics.read(topic, count)]

    def stop(self) -> None:
        for process in reversed(self.started):
            process.stop()


@pytest.fixture
def deployment(tmp_path: Path, topics: Topics, platform: PlatformServer) -> Iterator[Deployment]:
    made = Deployment(tmp_path, topics, platform)
    yield made
    made.stop()
