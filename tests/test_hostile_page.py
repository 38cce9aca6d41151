"""Pages an attacker controls, in headless Chromium, against a daemon with no api_key set.

Forms and no-cors fetches from another loopback origin (CSRF), a name resolved to the
daemon's address (DNS rebinding), framing of /ui, and the key the daemon prints in the
page address's fragment (poller.api.security, poller.api.server).
"""

from __future__ import annotations

import html
import json
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, expect

from tests.apiproc import ApiDaemon, api_settings, start_api_daemon
from tests.daemonproc import tick_job, wait_until
from tests.test_ui import EVIL, WAIT_MS, browser

__all__ = ["browser"]  # the fixture, shared with the page tests
_PRINTED = re.compile(r"open (http://\S+/ui#key=(\S+))")


class HostileSite:
    """An HTTP server on 127.0.0.2 (another origin than the daemon's) serving given pages
    and noting the paths asked of it."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.seen: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.seen.append(self.path)
                body = site.pages.get(self.path.split("?")[0], "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.url = f"http://127.0.0.2:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def serve(self, path: str, page: str) -> str:
        self.pages[path] = page
        return self.url + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiDaemon]:
    """The shipped default: the API on, no api_key (so the daemon generates one).

    One daemon per test: refusals are logged at most 10 a minute (logs.RateLimitFilter),
    so another test's refused requests could hide this one's.
    """
    config = {
        "settings": {"api": api_settings(key=None)},
        "jobs": [tick_job("t", every="1h"), tick_job("u", every="1h")],
    }
    running = start_api_daemon(tmp_path, config, key=None)
    yield running
    running.daemon.stop()


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileSite]:
    site = HostileSite()
    yield site
    site.close()


def printed(api: ApiDaemon) -> tuple[str, str]:
    """The page address the daemon printed to stderr, and the key in it."""
    match = wait_until(
        lambda: _PRINTED.search(api.daemon.stderr()), 10, what="the page address on stderr"
    )
    return match.group(1), match.group(2)


def holds_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Fail as soon as `condition` stops holding within `seconds` (late effects)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), what
        time.sleep(0.05)


def csrf_page(daemon: str) -> str:
    evil_job = {"id": "evil", "every": "1m", "integrationIDs": [[{"function": "steps:tick"}]]}
    # text/plain sends `name=value`: this name and value make the body a whole JSON job.
    name = json.dumps(evil_job)[:-1] + ',"label":"'
    fetched = json.dumps({**evil_job, "id": "evil2"})
    return f"""<!doctype html><html><body>
<iframe name="f0"></iframe><iframe name="f1"></iframe><iframe name="f2"></iframe>
<form method="post" enctype="text/plain" action="{daemon}/jobs" target="f0">
  <input type="hidden" name="{html.escape(name)}" value='"}}'></form>
<form method="post" action="{daemon}/jobs/t/trigger" target="f1">
  <input type="hidden" name="wait" value="false"></form>
<form method="post" action="{daemon}/trigger" target="f2">
  <input type="hidden" name="all" value="1"></form>
<script>
const loaded = [...document.querySelectorAll("iframe")].map(
  frame => new Promise(done => frame.addEventListener("load", done, {{once: true}})));
for (const form of document.forms) form.submit();
const send = (path, body) => fetch("{daemon}" + path, {{method: "POST", mode: "no-cors",
  headers: {{"Content-Type": "text/plain"}}, body}}).then(() => "ok", err => String(err));
const sent = [send("/jobs", {json.dumps(fetched)}), send("/jobs/t/pause", "{{}}")];
Promise.all([...sent, ...loaded]).then(
  all => fetch("/beacon?fetches=" + encodeURIComponent(all.slice(0, 2).join())));
</script></body></html>"""


def test_a_hostile_page_cannot_create_jobs_or_start_runs(
    browser: Browser, api: ApiDaemon, hostile: HostileSite
) -> None:
    config_before = api.daemon.config_path.read_bytes()
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(hostile.serve("/csrf", csrf_page(api.url)))
    beacon = wait_until(
        lambda: [path for path in hostile.seen if path.startswith("/beacon")],
        WAIT_MS / 1000,
        what="the hostile page's beacon after its submissions",
    )
    assert beacon == ["/beacon?fetches=ok%2Cok"]  # the no-cors fetches were answered

    holds_for(
        lambda: (
            api.daemon.config_path.read_bytes() == config_before
            and api.daemon.runs("t") == []
            and api.daemon.runs("u") == []
        ),
        0.5,
        "config.json changed or a run started",
    )

    # Every submission reached the daemon and was refused there, before any key check.
    refusals = re.findall(
        r"API request refused \(403\): POST (\S+): cross-origin request refused \(Origin '(.*)'\)$",
        api.daemon.log(),
        re.MULTILINE,
    )
    paths = ["/jobs", "/jobs", "/jobs/t/pause", "/jobs/t/trigger", "/trigger"]
    assert sorted(refusals) == [(path, hostile.url) for path in paths]
    context.close()


def test_a_rebound_name_is_not_served(browser: Browser, api: ApiDaemon) -> None:
    _, key = printed(api)
    port = api.url.rsplit(":", 1)[1]
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    for path in ("/jobs", "/health", "/ui"):
        response = page.goto(f"http://{EVIL}:{port}{path}")
        assert response is not None and response.status == 400, path
        assert "DNS rebinding guard" in response.text()
    # A script of the rebound origin, even holding the key, reads nothing and starts nothing.
    statuses = page.evaluate(
        """async key => [
            (await fetch("/jobs", {headers: {"X-API-Key": key}})).status,
            (await fetch("/jobs/t/trigger", {method: "POST", headers: {"X-API-Key": key}})).status,
        ]""",
        key,
    )
    assert statuses == [400, 400]
    context.close()

    def get(path: str, host: str) -> int:
        headers = {"Host": host, "X-API-Key": key}
        return requests.get(api.url + path, headers=headers, timeout=10).status_code

    assert [get("/jobs", "evil.com"), get("/logs", "evil.com")] == [400, 400]
    assert get("/jobs", f"evil.com:{port}") == 400
    assert [get("/jobs", f"localhost:{port}"), get("/logs", f"[::1]:{port}")] == [200, 200]
    assert get("/jobs", f"127.0.0.1:{port}") == 200
    assert api.daemon.runs("t") == []


def test_the_page_cannot_be_framed(browser: Browser, api: ApiDaemon, hostile: HostileSite) -> None:
    response = requests.get(api.url + "/ui", timeout=10)
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    policy = [part.strip() for part in response.headers["Content-Security-Policy"].split(";")]
    assert "frame-ancestors 'none'" in policy
    script_src = [part for part in policy if part.startswith("script-src ")]
    assert script_src == ["script-src 'self'"]

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    failures: list[str] = []
    page.on("requestfailed", lambda request: failures.append(f"{request.url} {request.failure}"))
    page.goto(hostile.serve("/frame", f'<iframe id="poller" src="{api.url}/ui"></iframe>'))
    frame = page.locator("#poller").element_handle().content_frame()
    assert frame is not None
    frame.wait_for_load_state("load")
    # Chromium shows its error page in the frame: nothing of Poller's page is there.
    assert frame.url != api.url + "/ui", frame.url
    assert frame.locator("#jobs").count() == 0
    assert frame.locator("#keyform").count() == 0
    assert f"{api.url}/ui net::ERR_BLOCKED_BY_RESPONSE" in failures
    context.close()


def test_the_printed_address_opens_the_page_and_leaves_no_key_behind(
    browser: Browser, api: ApiDaemon
) -> None:
    address, key = printed(api)
    assert address == f"{api.url}/ui#key={key}"
    key_file = api.daemon.db_path.with_name("poller.db.api-key")
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key not in api.daemon.log()
    assert "API key generated and kept in" in api.daemon.log()

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(address)
    expect(page.locator("tr.job")).to_have_count(2)
    expect(page.locator("#keyform")).to_be_hidden()
    assert page.evaluate("location.hash") == ""
    assert key not in page.url
    context.close()

    fresh = browser.new_context()
    page = fresh.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(api.url + "/ui")
    expect(page.locator("#keyform")).to_be_visible()
    expect(page.locator("tr.job")).to_have_count(0)
    fresh.close()
