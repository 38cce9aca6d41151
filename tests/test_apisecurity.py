"""The API's guards against the real daemon: the generated key, Origin, body type, Host names
served (with allowed_hosts), the headers that stop framing. Chromium attacks them in
tests/test_hostile_page.py; here plain HTTP checks each rule and its error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from poller.api.security import host_name
from tests.apiproc import API_KEY, ApiDaemon, api_settings, start_api_daemon
from tests.daemonproc import tick_job, wait_until

ADDRESS_RE = re.compile(r"Poller: open (http://127\.0\.0\.1:\d+)/ui#key=(\S+) to see the jobs")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiDaemon]:
    folder = tmp_path_factory.mktemp("guarded")
    settings = api_settings(allowed_hosts=["poller.example.com"])
    running = start_api_daemon(
        folder, {"settings": {"api": settings}, "jobs": [tick_job("t", "1h")]}
    )
    yield running
    running.daemon.stop()


def test_a_state_change_from_another_origin_is_refused_even_with_the_key(api: ApiDaemon) -> None:
    for origin in ("http://127.0.0.2:8000", "http://localhost:9999", "null", "https://evil.com"):
        answer = api.post("/jobs/t/trigger", headers={"Origin": origin})
        assert answer.status_code == 403, origin
        assert answer.json()["detail"] == f"cross-origin request refused (Origin {origin!r})"
    assert api.daemon.runs("t") == []
    own = api.url  # the page's own origin, as Chromium sends it
    assert api.post("/jobs/t/trigger", headers={"Origin": own}).status_code == 202
    proxied = api.post("/jobs/t/trigger", headers={"Origin": "https://poller.example.com"})
    assert proxied.status_code in (202, 409)  # an allowed host's page; 409 if still running
    assert api.get("/jobs", headers={"Origin": "https://evil.com"}).status_code == 200  # reads


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]
)
def test_a_body_must_be_json(api: ApiDaemon, content_type: str) -> None:
    body = '{"id": "evil", "every": "1m", "integrationIDs": [["x"]]}'
    answer = api.post("/jobs", data=body, headers={"Content-Type": content_type})
    assert answer.status_code == 415
    assert answer.json()["detail"] == (
        "a request body must be JSON, sent as Content-Type: application/json"
    )
    assert "evil" not in api.daemon.config_path.read_text()


def test_allowed_hosts_are_served_besides_loopback(api: ApiDaemon) -> None:
    port = api.url.rsplit(":", 1)[1]
    for host in ("poller.example.com", f"POLLER.example.com:{port}", f"localhost:{port}"):
        assert api.get("/jobs", headers={"Host": host}).status_code == 200, host
    refused = api.get("/health", headers={"Host": "other.example.com"})
    assert refused.status_code == 400
    assert "Host 'other.example.com' is not served here" in refused.json()["detail"]


def test_every_answer_refuses_framing_and_the_page_runs_no_inline_script(api: ApiDaemon) -> None:
    for path in ("/ui", "/docs", "/health", "/jobs"):
        assert api.get(path).headers["X-Frame-Options"] == "DENY", path
    page = api.get("/ui")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "<script>" not in page.text and "<style>" not in page.text
    assert '<script src="/ui/assets/page.js"></script>' in page.text


@pytest.mark.parametrize(
    ("header", "name"),
    [("localhost:8000", "localhost"), ("[::1]:8000", "[::1]"), ("Evil.COM.", "evil.com")],
)
def test_host_names_are_read_without_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_without_a_configured_key_one_is_generated_kept_and_printed_once(tmp_path: Path) -> None:
    config = {"settings": {"api": api_settings(key=None)}, "jobs": [tick_job("t", "1h")]}
    running = start_api_daemon(tmp_path, config, key=None)
    key_file = tmp_path / "data" / "poller.db.api-key"
    try:
        match = wait_until(lambda: ADDRESS_RE.search(running.daemon.stderr()), what="address")
        url, key = match.groups()
        assert url == running.url and key == key_file.read_text().strip()
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert requests.get(url + "/jobs", timeout=10).status_code == 401
        assert requests.get(url + "/jobs", headers={"X-API-Key": key}, timeout=10).ok
        bearer = {"Authorization": f"Bearer {key}"}
        assert requests.get(url + "/metrics", headers=bearer, timeout=10).ok
        assert f"key generated, in {key_file}" in running.daemon.log()
    finally:
        running.daemon.stop()
    running.daemon.start()
    try:
        assert running.daemon.stderr().count(key) == 2  # the same key, printed once per start
    finally:
        running.daemon.stop()
    assert key not in running.daemon.log()
    assert API_KEY not in running.daemon.stderr()
