"""A real `python app.py` daemon in a subprocess, for end-to-end tests.

Writes config.json into a temporary folder, starts the daemon on it, and offers waits on
conditions (log lines, run records) with bounded timeouts instead of sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from poller.store import SqliteStore
from tests.platform import PlatformServer

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS = """  # steps.py of a test config folder
import time

def tick(data, context):
    return {"tick": True}

def nap(data, context):
    time.sleep(float(data.get("seconds", 1)))
    return {"slept": True}
"""


def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def run_app(
    folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python app.py ARGS --config config.json` in `folder`, to its end; output as text."""
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), *args, "--config", "config.json"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def app(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python app.py ARGS` to its end; output as text."""
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def write(folder: Path, config: Any, name: str = "config.json") -> Path:
    """A config file in `folder`: JSON of `config`, or `config` itself when it is text."""
    path = folder / name
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return path


class AppProcess:
    """A `python app.py …` subprocess: signals, its exit, and a stop that ends it."""

    proc: subprocess.Popen[bytes] | None = None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class DaemonProcess(AppProcess):
    def __init__(self, folder: Path, config: dict[str, Any], env: dict[str, str] | None = None):
        self.folder = folder
        self.config_path = folder / "config.json"
        self.log_path = folder / "logs" / "logfile.log"
        self.db_path = folder / "data" / "poller.db"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(config)

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else json.dumps(config, indent=2)
        self.config_path.write_text(text)

    def replace_config(self, config: dict[str, Any]) -> None:
        """Save as editors do: write a temp file, then rename it over the config."""
        temp = self.folder / ".config.json.tmp"
        temp.write_text(json.dumps(config, indent=2))
        temp.replace(self.config_path)

    def start(self, *args: str) -> DaemonProcess:
        starts = self.log().count("Poller started")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--config", str(self.config_path), *args],
            cwd=self.folder,
            env=self.env,
            stdout=open(self.folder / "stdout.txt", "ab"),  # noqa: SIM115
            stderr=open(self.folder / "stderr.txt", "ab"),  # noqa: SIM115
        )
        proc = self.proc
        wait_until(
            lambda: self.log().count("Poller started") > starts or proc.poll() is not None,
            timeout=15,
            what="the daemon to start",
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stderr(self) -> str:
        path = self.folder / "stderr.txt"
        return path.read_text() if path.exists() else ""

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        wait_until(
            lambda: self.log().count(text) >= count, timeout, what=f"{count}x {text!r} in the log"
        )
        return self.log()

    def runs(self, job_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        if not self.db_path.exists():
            return []
        store = SqliteStore(self.db_path)
        try:
            return store.recent(job_id, limit=10_000, status=status)
        finally:
            store.close()

    def wait_runs(
        self, job_id: str, count: int, status: str | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        return wait_until(  # type: ignore[no-any-return]
            lambda: (runs := self.runs(job_id, status)) and len(runs) >= count and runs,
            timeout,
            what=f"{count} {status or ''} runs of {job_id}",
        )


def config_with(
    *jobs: dict[str, Any], platform: PlatformServer | None = None, **settings: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {"settings": settings, "jobs": list(jobs)}
    if platform is not None:
        config["environments"] = {
            "live": {"base_url": platform.url, "retries": 0, "timeout_seconds": 10}
        }
    return config


def tick_job(job_id: str, every: str = "1s", **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "every": every,
        "integrationIDs": [[{"function": "steps:tick"}]],
        **fields,
    }


def launch(daemons: list[DaemonProcess], folder: Path, config: dict[str, Any]) -> DaemonProcess:
    daemon = DaemonProcess(folder, config)
    daemons.append(daemon)
    daemon.start()
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.stderr()
    return daemon


@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A fresh tmpfs mounted on `folder` (mount -o OPTIONS) for the block; root and mount(8)
    needed. Skips the test where it cannot mount, but fails it in CI (which has both)."""
    folder.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs ({options}) here: {mounted.stderr.decode().strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
