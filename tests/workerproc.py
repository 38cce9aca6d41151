"""A real `python app.py worker` in a subprocess, on a config of its own folder; waits on
its log with deadlines, and reads its /health and /metrics."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.daemonproc import REPO, wait_until

_HEALTH = re.compile(r"health and metrics at (http://\S+)/health")


class WorkerProcess:
    def __init__(self, folder: Path, kafka: dict[str, Any], env: dict[str, str] | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "settings": {"kafka": kafka, "state_db": "data/worker.db", "log_file": "logs/x.log"},
            "jobs": [],
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_url = ""

    @property
    def log_path(self) -> Path:
        return self.folder / "logs" / "worker.log"

    def start(self) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "worker", "--config", "config.json"],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "stderr.txt").open("wb"),
        )
        found = self.wait_log("health and metrics at")
        match = _HEALTH.search(found)
        assert match, found
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

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def settle(seconds: float) -> None:
    """Let a worker show that nothing more comes (only for asserting an absence)."""
    time.sleep(seconds)
