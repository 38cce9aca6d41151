"""The real daemon with its HTTP API on, for the API, page and schemathesis tests.

The API listens on port 0; its URL is read from the daemon's "API listening on" log line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests

from tests.daemonproc import DaemonProcess, wait_until

API_KEY = "api-key-for-tests-5f1c"
FUNCTIONS = """
import time

def tick(data, context):
    return {"tick": True}

def nap(data, context):
    time.sleep(float(data.get("seconds", 1)))
    return {"slept": True}

def boom(data, context):
    raise ValueError("the source is empty")

def answer(data, context):
    import json, pathlib
    return json.loads(pathlib.Path(data["file"]).read_text())
"""
_LISTENING = re.compile(r"API listening on (http://\S+)")


def api_settings(key: str | None = API_KEY, **fields: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"enabled": True, "host": "127.0.0.1", "port": 0, **fields}
    if key is not None:
        settings["api_key"] = "${POLLER_API_KEY}"
    return settings


class ApiDaemon:
    """A started daemon and a requests session on its API (with the key, when given)."""

    def __init__(self, daemon: DaemonProcess, key: str | None = API_KEY) -> None:
        self.daemon = daemon
        log = daemon.wait_log("API listening on", timeout=15)
        match = _LISTENING.search(log)
        assert match, log
        self.url = match.group(1)
        self.session = requests.Session()
        if key is not None:
            self.session.headers["X-API-Key"] = key

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def json(self, path: str, **kwargs: Any) -> Any:
        response = self.get(path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_job(self, job_id: str, what: str, check: Any, timeout: float = 10.0) -> Any:
        """Poll GET /jobs/{id} until `check(job or None)` holds."""

        def probe() -> Any:
            response = self.get(f"/jobs/{job_id}")
            job = response.json() if response.status_code == 200 else None
            return check(job) and (job or True)

        return wait_until(probe, timeout, what=f"{job_id}: {what}")


def start_api_daemon(
    folder: Path, config: dict[str, Any], key: str | None = API_KEY, **env: str
) -> ApiDaemon:
    (folder / "steps.py").write_text(FUNCTIONS)
    environ = {"POLLER_API_KEY": key or "", **env}
    daemon = DaemonProcess(folder, config, env=environ)
    daemon.start()
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.stderr()
    return ApiDaemon(daemon, key)
