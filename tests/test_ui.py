"""The page at /ui in headless Chromium (Debian's, driven by Playwright) against the real daemon."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.apiproc import API_KEY, ApiDaemon, api_settings, start_api_daemon

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
    expect(page.locator("#runs .run .error").nth(1)).to_contain_text("ValueError")
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
