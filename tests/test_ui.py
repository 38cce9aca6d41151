"""The page at /ui in headless Chromium (Debian's, driven by Playwright) against the real daemon."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.apiproc import API_KEY, ApiDaemon, api_settings, start_api_daemon
from tests.daemonproc import wait_until
from tests.receivers import Recorder
from tests.watched import WATCH_CHAIN, answer, install

CHROMIUM = Path("/usr/bin/chromium")
EVIL = "evil.test"
"""A name Chromium resolves to the daemon's address: DNS rebinding (tests/test_hostile_page.py)."""
CHROMIUM_ARGS = [
    f"--host-resolver-rules=MAP {EVIL} 127.0.0.1",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_COPY = Path("/tmp/poller-ui.png")
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiDaemon]:
    def job(job_id: str, label: str, every: str, function: str) -> dict[str, object]:
        return {
            "id": job_id,
            "label": label,
            "every": every,
            "integrationIDs": [[{"function": "steps:tick"}], [{"function": function}]],
        }

    config = {
        "settings": {"api": api_settings()},
        "jobs": [
            job("report", "Nightly report", "1h", "steps:tick"),
            job("sync", "Sync orders", "30m", "steps:boom"),
            job("cleanup", "Clean up", "1d", "steps:tick"),
        ],
    }
    running = start_api_daemon(tmp_path, config)
    yield running
    running.daemon.stop()


def row(page: Page, job_id: str) -> str:
    return f"tr.job[data-job-id='{job_id}']"


def test_the_page_lists_jobs_runs_them_and_pauses_them(
    browser: Browser, api: ApiDaemon, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(WAIT_MS)
    page.goto(api.url + "/ui")

    # The page holds no data: it asks for the key once, then keeps it for the tab.
    expect(page.locator("#keyform")).to_be_visible()
    page.fill("#key", API_KEY)
    page.click("#keyform button")
    expect(page.locator("tr.job")).to_have_count(3)
    expect(page.locator(row(page, "report"))).to_contain_text("Nightly report")
    expect(page.locator(row(page, "report"))).to_contain_text("every 1h")
    expect(page.locator(row(page, "sync"))).to_contain_text("every 30m")

    # Run now: the run appears with its steps.
    page.click(f"{row(page, 'report')} button.run-now")
    run = page.locator("#runs .run").first
    expect(run.locator(".head .badge")).to_have_text("success")
    expect(run.locator("tr.step")).to_have_count(2)
    expect(run.locator("tr.step").first).to_contain_text("function:steps:tick")

    # A failing chain shows the error of its step.
    page.click(f"{row(page, 'sync')} button.run-now")
    failed = page.locator("#runs .run").first
    expect(failed.locator(".head .badge")).to_have_text("failed")
    expect(failed.locator("tr.step").nth(1)).to_contain_text("the source is empty")
    expect(page.locator(f"{row(page, 'sync')} .bars span.s-failed")).to_have_count(1)

    # Pause greys the job out and writes enabled: false into config.json.
    page.click(f"{row(page, 'cleanup')} button.pause")
    expect(page.locator(row(page, "cleanup"))).to_have_class("job paused")
    expect(page.locator(f"{row(page, 'cleanup')} button.resume")).to_be_visible()
    opacity = page.eval_on_selector(
        f"{row(page, 'cleanup')} td.next", "cell => getComputedStyle(cell).opacity"
    )
    assert float(opacity) < 0.6
    jobs = json.loads(api.daemon.config_path.read_text())["jobs"]
    assert jobs[2]["enabled"] is False

    # Reloading the page does not ask for the key again.
    page.reload()
    expect(page.locator("tr.job")).to_have_count(3)
    expect(page.locator("#keyform")).to_be_hidden()

    page.click(row(page, "sync"))
    expect(page.locator("#detail-title")).to_have_text("Recent runs of sync")
    expect(page.locator("#runs .run .error").first).to_contain_text("ValueError")  # steps only
    shot = tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    page.close()


def test_a_long_job_list_is_shown_a_page_at_a_time(browser: Browser, tmp_path: Path) -> None:
    jobs = [
        {"id": f"job{i:03d}", "every": "1h", "integrationIDs": [[{"function": "steps:tick"}]]}
        for i in range(250)
    ]
    running = start_api_daemon(tmp_path, {"settings": {"api": api_settings()}, "jobs": jobs})
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(WAIT_MS)
        page.goto(running.url + "/ui")
        page.fill("#key", API_KEY)
        page.click("#keyform button")
        expect(page.locator("tr.job")).to_have_count(100)
        expect(page.locator("#pageinfo")).to_have_text("jobs 1 to 100 of 250")
        expect(page.locator("#prev")).to_be_disabled()
        page.click("#next")
        expect(page.locator("#pageinfo")).to_have_text("jobs 101 to 200 of 250")
        expect(page.locator("tr.job").first).to_have_attribute("data-job-id", "job100")
        page.click("#next")
        expect(page.locator("tr.job")).to_have_count(50)
        expect(page.locator("#next")).to_be_disabled()
        page.click("#prev")
        expect(page.locator("tr.job").last).to_have_attribute("data-job-id", "job199")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(tmp_path / "pages.png"))
        page.close()
    finally:
        running.daemon.stop()


def test_a_wrong_key_is_asked_again(browser: Browser, api: ApiDaemon) -> None:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(api.url + "/ui")
    page.fill("#key", "not-the-key")
    page.click("#keyform button")
    expect(page.locator("#keyerror")).to_have_text("That key was refused.")
    page.close()


def test_the_api_docs_render_with_no_internet(browser: Browser, api: ApiDaemon) -> None:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(api.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Poller")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    page.close()


RED = "rgb(207, 34, 46)"
"""--bad in page.css: failures, and only failures."""
NEUTRAL = "rgb(140, 149, 159)"
MUTED = "rgb(87, 96, 106)"
DESCRIPTION = "Builds the <b>nightly</b> report for https://reports.example.com/eu-west/nightly"
LONG_URL = "http://127.0.0.1:9/api/v2/integrations/orders/synchronise-with-the-eu-west-warehouse"
SHOWN_FUNCTIONS = """
def report(data, context):
    return {
        "note": "<img src=x onerror=\\"window.pwned = 1\\">",
        "password": "hunter2-in-the-output",
        "rows": ["r" * 90 for _ in range(60)],
    }
"""


@pytest.fixture
def shown(tmp_path: Path) -> Iterator[ApiDaemon]:
    """Jobs with a description, a step skipped by its `when`, a failing step and long output."""
    (tmp_path / "shown.py").write_text(SHOWN_FUNCTIONS)
    skipped = {
        "http": {"method": "GET", "url": LONG_URL},
        "when": {"token": "rows", "exists": False},
    }
    config = {
        "settings": {"api": api_settings()},
        "jobs": [
            {
                "id": "report",
                "label": "Nightly report",
                "description": DESCRIPTION,
                "every": "1h",
                "integrationIDs": [[{"function": "shown:report"}], [skipped]],
            },
            {
                "id": "sync",
                "label": "Sync orders",
                "every": "30m",
                "integrationIDs": [[{"function": "steps:tick"}], [{"function": "steps:boom"}]],
            },
            {"id": "idle", "every": "1d", "integrationIDs": [[{"function": "steps:tick"}]]},
        ],
    }
    running = start_api_daemon(tmp_path, config)
    yield running
    running.daemon.stop()


def open_page(browser: Browser, api: ApiDaemon, width: int = 1280, height: int = 800) -> Page:
    """The page opened at the address the daemon prints (the key in its fragment)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{api.url}/ui#key={API_KEY}")
    expect(page.locator("tr.job").first).to_be_visible()
    return page


def run_now(api: ApiDaemon, job_id: str) -> dict[str, Any]:
    """Run a job through the API, waiting for its end; its record."""
    answer = api.post(f"/jobs/{job_id}/trigger", params={"wait": "true", "timeout_seconds": 20})
    assert answer.status_code == 200, answer.text
    return answer.json()["run"]  # type: ignore[no-any-return]


def test_the_pager_is_hidden_while_every_job_fits_on_one_page(
    browser: Browser, api: ApiDaemon
) -> None:
    page = open_page(browser, api)
    expect(page.locator("tr.job")).to_have_count(3)
    expect(page.locator("#pageinfo")).to_have_text("jobs 1 to 3 of 3")  # drawn, and hidden
    expect(page.locator("#pager")).to_be_hidden()
    page.close()


def test_a_run_under_a_second_reads_in_milliseconds(browser: Browser, api: ApiDaemon) -> None:
    run_now(api, "report")
    page = open_page(browser, api)
    last = page.locator(f"{row(page, 'report')} td.last")
    expect(last).to_have_text(
        re.compile(r"^success in (< 1 ms|[1-9]\d* ms|\d+\.\d s) · (just now|\d+s ago)$")
    )
    shown = page.evaluate(
        """() => [duration(0), duration(120), duration(400), duration(999), duration(1500),
                  duration(75_000), relative(new Date(Date.now() - 300).toISOString()),
                  relative(new Date(Date.now() + 300).toISOString())]"""
    )
    assert shown == [
        "< 1 ms",
        "120 ms",
        "400 ms",
        "999 ms",
        "1.5 s",
        "1 min 15 s",
        "just now",
        "now",
    ]
    page.close()


def test_the_favicon_needs_no_key_and_has_the_page_headers(
    browser: Browser, api: ApiDaemon
) -> None:
    icon = requests.get(api.url + "/favicon.ico", timeout=10)
    assert icon.status_code == 200, icon.text
    assert icon.headers["Content-Type"] == "image/svg+xml"
    assert icon.content.startswith(b"<svg ")
    ui = requests.get(api.url + "/ui", timeout=10)
    for header in ("X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy"):
        assert icon.headers[header] == ui.headers[header], header
    assert icon.headers["Content-Security-Policy"] == ui.headers["Content-Security-Policy"]

    page = open_page(browser, api)
    href = page.eval_on_selector("link[rel=icon]", "link => link.href")
    assert href == api.url + "/favicon.ico"
    fetched = page.evaluate(
        """async href => {
            const answer = await fetch(href);
            return [answer.status, answer.headers.get("content-type")];
        }""",
        href,
    )
    assert fetched == [200, "image/svg+xml"]
    page.close()


def test_a_step_skipped_by_its_condition_is_neutral_and_only_a_failure_is_red(
    browser: Browser, shown: ApiDaemon
) -> None:
    reason = run_now(shown, "report")["steps"][1]["reason"]
    assert reason
    run_now(shown, "sync")
    page = open_page(browser, shown)
    page.click(row(page, "report"))
    step = page.locator("#runs .run tr.step").nth(1)
    expect(step.locator(".badge")).to_have_text("skipped")
    expect(step.locator("td").last).to_have_text(f"skipped: {reason}")
    expect(step.locator(".error")).to_have_count(0)
    expect(page.locator("#runs .run").first.locator(".error")).to_have_count(0)
    badge, note = step.evaluate(
        """step => [getComputedStyle(step.querySelector(".badge")).backgroundColor,
                    getComputedStyle(step.lastElementChild).color]"""
    )
    assert (badge, note) == (NEUTRAL, MUTED)

    page.click(row(page, "sync"))
    failed = page.locator("#runs .run").first.locator("tr.step").nth(1)
    expect(failed.locator("td.error")).to_contain_text("ValueError: the source is empty")
    colours = failed.evaluate(
        """step => [getComputedStyle(step.querySelector(".badge")).backgroundColor,
                    getComputedStyle(step.querySelector("td.error")).color]"""
    )
    assert colours == [RED, RED]
    page.close()


def test_a_job_shows_its_description_and_last_output_as_text(
    browser: Browser, shown: ApiDaemon
) -> None:
    run_now(shown, "report")
    run_now(shown, "sync")
    output = shown.json("/jobs/report")["last_output"]
    assert output["is_cut"] is True and len(output["text"]) == 4096
    assert output["total_chars"] > 4096
    assert output["text"].startswith('{\n  "note": "<img src=x onerror=\\"window.pwned = 1\\">",')
    assert '"password": "**********"' in output["text"]
    assert "hunter2" not in shown.get("/jobs/report").text
    # a failed run's output is the input of the step that stopped it
    assert shown.json("/jobs/sync")["last_output"] == {
        "text": '{\n  "tick": true\n}',
        "is_cut": False,
        "total_chars": 18,
    }
    assert shown.json("/jobs/idle")["last_output"] is None
    assert shown.json("/jobs")["jobs"][0]["description"] == DESCRIPTION

    page = open_page(browser, shown)
    expect(page.locator(f"{row(page, 'report')} .description")).to_have_text(DESCRIPTION)
    expect(page.locator(f"{row(page, 'idle')} .description")).to_have_count(0)
    page.click(row(page, "report"))
    expect(page.locator("#detail-description")).to_have_text(DESCRIPTION)
    expect(page.locator("#output-note")).to_have_text(
        f"cut: the first 4096 of {output['total_chars']} characters"
    )
    assert page.locator("#output-text").text_content() == output["text"]
    # hostile values stay text: no element is made of them, no script of theirs runs
    assert page.evaluate("document.querySelectorAll('#content b, #content img').length") == 0
    assert page.evaluate("window.pwned") is None
    assert "hunter2" not in page.content()

    page.click(row(page, "idle"))
    expect(page.locator("#detail-title")).to_have_text("Recent runs of idle")
    expect(page.locator("#output")).to_be_hidden()
    expect(page.locator("#detail-description")).to_be_hidden()
    page.close()


def test_the_page_needs_no_sideways_scrolling_at_800_pixels(
    browser: Browser, shown: ApiDaemon
) -> None:
    for _ in range(12):  # a full bar of recent runs
        run_now(shown, "report")
    run_now(shown, "sync")
    page = open_page(browser, shown, width=800, height=600)
    expect(page.locator(f"{row(page, 'report')} .bars span")).to_have_count(12)
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    page.click(row(page, "report"))
    expect(page.locator("#runs .run").first.locator("tr.step")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    page.click(row(page, "sync"))
    expect(page.locator("#runs .run").first.locator(".error").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    page.close()


def test_an_invalid_config_file_shows_a_banner_and_a_dry_run_a_badge(
    browser: Browser, tmp_path: Path
) -> None:
    tick = {"id": "tick", "every": "1h", "integrationIDs": [[{"function": "steps:tick"}]]}
    dry = {**tick, "id": "dry", "dry_run": True}
    good = {"settings": {"api": api_settings()}, "jobs": [tick, dry]}
    running = start_api_daemon(tmp_path, good)
    try:
        assert run_now(running, "tick")["dry_run"] is False
        assert run_now(running, "dry")["dry_run"] is True
        page = open_page(browser, running)
        expect(page.locator(f"{row(page, 'dry')} td.last .badge.dry")).to_have_text("dry run")
        expect(page.locator(f"{row(page, 'tick')} .badge.dry")).to_have_count(0)
        page.click(row(page, "dry"))
        expect(page.locator("#runs .run .head .badge.dry")).to_have_text("dry run")
        expect(page.locator("#configfile")).to_be_hidden()

        hostile = "<img src=x onerror=window.pwned=1>"
        running.daemon.write_config(
            {**good, "jobs": [{**tick, "every": hostile}, dry, {"id": "x"}]}
        )
        shown = wait_until(
            lambda: (f := running.json("/status")["config_file"]) and not f["valid"] and f,
            10,
            what="/status saying the file is invalid",
        )
        count, problems = shown["problem_count"], shown["problems"]
        since = shown["invalid_since"].replace("T", " ")[:19]
        banner = page.locator("#configfile")
        expect(banner).to_be_visible(timeout=WAIT_MS)  # at the page's next refresh
        expect(banner.locator("#configfile-text")).to_have_text(
            f"config.json on disk is invalid since {since} ({count} problems); "
            "the last good config is running"
        )
        more = [f"… and {count - len(problems)} more"] if count > len(problems) else []
        expect(banner.locator("li")).to_have_text(problems + more)
        assert any(hostile in problem for problem in problems)
        assert page.evaluate("document.querySelectorAll('#configfile img').length") == 0
        assert page.evaluate("window.pwned") is None
        expect(page.locator("tr.job")).to_have_count(2)  # the last good config runs on

        running.daemon.write_config(good)
        expect(banner).to_be_hidden(timeout=WAIT_MS)
        page.close()
    finally:
        running.daemon.stop()


def test_a_run_shows_its_items_its_diff_and_its_alerts_and_an_alert_link_opens_it(
    browser: Browser, tmp_path: Path
) -> None:
    hostile = "<img src=x onerror=window.pwned=1>"
    install(tmp_path, a=1, down=0, c=3)
    with Recorder() as hook:
        config = {
            "settings": {
                "api": api_settings(),
                "alerts": {"hook": {"type": "webhook", "url": f"{hook.url}/hook"}},
                "alert_window_seconds": 0,
            },
            "jobs": [
                {
                    "id": "watch",
                    "every": "1h",
                    "detect_changes": True,
                    "alerts": {"on": ["change"], "channels": ["hook"]},
                    "integrationIDs": WATCH_CHAIN,
                }
            ],
        }
        running = start_api_daemon(tmp_path, config)
        try:
            first = run_now(running, "watch")
            assert first["changed"] is None and first["items_failed"] == 1
            answer(tmp_path, a=hostile, down=0, c=3)
            second = run_now(running, "watch")
            assert second["changed"] is True, second
            (_, alert), *_ = hook.wait_for(1)
            assert alert["kind"] == "change" and alert["run_id"] == second["run_id"]
            assert alert["url"] == f"{running.url}/ui#run={second['run_id']}"
            run_now(running, "watch")  # the changed run is no longer the newest

            page = open_page(browser, running)
            page.goto(alert["url"])  # the alert's own link: the job opens, the run marked
            shown = page.locator(f"#runs .run.wanted[data-run-id='{second['run_id']}']")
            expect(shown.locator(".badge.changed")).to_have_text("changed")
            expect(shown.locator(".items")).to_contain_text(
                "items: 3 processed, 2 succeeded, 1 failed"
            )
            expect(shown.locator(".items .errors li")).to_have_text(
                ["item down: RuntimeError: source down is not answering"]
            )
            expect(shown.locator(".diff li").first).to_contain_text(f"→ {json.dumps(hostile)}")
            expect(shown.locator(".alerts li")).to_have_text(["change to hook: sent"])
            expect(page.locator("#runs .run .badge.changed")).to_have_count(1)
            assert page.evaluate("document.querySelectorAll('#runs img').length") == 0
            assert page.evaluate("window.pwned") is None
            page.close()
        finally:
            running.daemon.stop()
