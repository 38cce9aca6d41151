"""The HTTP API against the real daemon (`python app.py` subprocess) and the stand-in platform."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from poller.api.app import build_app
from poller.api.server import bind, serve
from poller.config.load import load_config
from poller.daemon import STALL_SECONDS, Daemon
from poller.store import SqliteStore
from tests.apiproc import API_KEY, ApiDaemon, api_settings, start_api_daemon
from tests.conftest import FakeClock
from tests.daemonproc import REPO, DaemonProcess, wait_until
from tests.platform import PlatformServer
from tests.receivers import Recorder
from tests.watched import WATCH_CHAIN, answer, install

PASSWORD = "platform-password-31"  # the stand-in platform's; also a secret of the config
HEADER_TOKEN = "header-token-9d2e7"


def base_config(platform: PlatformServer) -> dict[str, Any]:
    return {
        "settings": {"api": api_settings(), "timezone": "Europe/London"},
        "environments": {
            "live": {
                "base_url": platform.url,
                "retries": 0,
                "timeout_seconds": 10,
                "auth": {"type": "basic", "username": "alice", "password": "${PLATFORM_PW}"},
            }
        },
        "jobs": [
            {
                "id": "tick",
                "label": "Tick",
                "description": "a function every 2 s",
                "every": "2s",
                "integrationIDs": [[{"function": "steps:tick"}]],
            },
            {
                "id": "nap",
                "time": ["06:00", "18:30"],
                "input": {"seconds": 3},
                "integrationIDs": [[{"function": "steps:nap"}]],
            },
            {
                "id": "chain",
                "cron": "0 8-18 * * 1-5",
                "integrationIDs": [
                    ["abc123"],
                    [
                        {
                            "http": {
                                "method": "POST",
                                "url": platform.url + "/echo",
                                "headers": {"Authorization": "Bearer ${HEADER_TOKEN}"},
                                "json": {"password": "${PLATFORM_PW}"},
                            }
                        }
                    ],
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def platform_server() -> Iterator[PlatformServer]:
    with PlatformServer() as server:
        yield server


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, platform_server: PlatformServer
) -> Iterator[ApiDaemon]:
    folder = tmp_path_factory.mktemp("api")
    running = start_api_daemon(
        folder, base_config(platform_server), PLATFORM_PW=PASSWORD, HEADER_TOKEN=HEADER_TOKEN
    )
    yield running
    assert running.daemon.stop() == 0


def config_file(api: ApiDaemon) -> dict[str, Any]:
    return json.loads(api.daemon.config_path.read_text())  # type: ignore[no-any-return]


# --- reading ----------------------------------------------------------------------------


def test_root_lists_every_endpoint(api: ApiDaemon) -> None:
    info = api.json("/")
    assert info["service"] == "poller" and info["status"] == "running"
    listed = {(e["method"], e["path"]) for e in info["endpoints"]}
    assert {
        ("GET", "/status"),
        ("GET", "/jobs/{job_id}/runs"),
        ("POST", "/jobs/{job_id}/trigger"),
        ("DELETE", "/jobs/{job_id}"),
        ("GET", "/metrics"),
    } <= listed


def test_health_is_open_and_ok(api: ApiDaemon) -> None:
    response = requests.get(api.url + "/health", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["scheduler_running"] is True
    assert set(body) >= {"status", "scheduler_running", "timestamp"}


def test_status_reports_the_scheduler_and_the_last_execution(api: ApiDaemon) -> None:
    api.daemon.wait_runs("tick", 1, status="success")
    status = api.json("/status")
    assert status["scheduler_running"] is True
    assert status["jobs"] == 3 and status["jobs_scheduled"] >= 3
    assert status["next_run"]["job_id"]
    assert status["totals"]["success"] >= 1
    assert 0 <= status["success_rate"] <= 1
    last = status["last_execution"]
    assert last["status"] in ("success", "running", "failed")
    assert last["steps"]["total"] == sum(last["steps"][k] for k in ("success", "failed", "skipped"))


def test_logs_tail_is_capped(api: ApiDaemon) -> None:
    logs = api.json("/logs", params={"lines": 3})
    assert len(logs["lines"]) == 3
    assert logs["file"].endswith("logfile.log")
    assert len(api.json("/logs", params={"lines": 50_000})["lines"]) <= 1000
    assert api.get("/logs", params={"lines": 0}).status_code == 422


def test_jobs_show_schedule_next_fires_and_recent_runs(api: ApiDaemon) -> None:
    api.daemon.wait_runs("tick", 2, status="success")
    page = api.json("/jobs")
    assert page["total"] == 3
    jobs = {job["id"]: job for job in page["jobs"]}
    assert list(jobs) == ["tick", "nap", "chain"]
    tick = jobs["tick"]
    assert tick["schedule"] == "every 2s" and tick["timezone"] == "Europe/London"
    assert len(tick["next_fires"]) == 3 and tick["next_fire_at"] == tick["next_fires"][0]["at"]
    assert tick["last_run"]["status"] == "success" and tick["success_rate"] == 1.0
    assert jobs["nap"]["schedule"] == "daily at 06:00 and 18:30"
    assert jobs["nap"]["next_fires"][0]["at"][-6:] in ("+00:00", "+01:00")
    assert jobs["chain"]["schedule"].startswith("cron 0 8-18 * * 1-5")
    assert api.json("/jobs", params={"offset": 1, "limit": 1})["jobs"][0]["id"] == "nap"


def test_one_job_has_its_definition_and_redacted_environment(api: ApiDaemon) -> None:
    job = api.json("/jobs/chain")
    assert job["definition"]["cron"] == "0 8-18 * * 1-5"
    http = job["definition"]["integrationIDs"][1][0]["http"]
    assert http["headers"]["Authorization"] == "**********"
    assert http["json"]["password"] == "**********"
    environment = job["environment_detail"]
    assert environment["auth"] == {"type": "basic", "username": "alice", "password": "**********"}
    missing = api.get("/jobs/nope")
    assert missing.status_code == 404 and "no job 'nope'" in missing.json()["detail"]


def test_runs_of_a_job_and_one_run_with_steps(api: ApiDaemon) -> None:
    api.daemon.wait_runs("tick", 2, status="success")
    runs = api.json("/jobs/tick/runs", params={"limit": 2, "status": "success"})
    assert len(runs) == 2 and all(run["status"] == "success" for run in runs)
    assert runs[0]["started_at"] >= runs[1]["started_at"]
    run = api.json(f"/runs/{runs[0]['run_id']}")
    assert run["steps"][0] == {
        "id": "function:steps:tick",
        "step": 0,
        "entry": 0,
        "status": "success",
        "attempts": 1,
        "duration_ms": run["steps"][0]["duration_ms"],
        "error": None,
        "reason": None,
    }
    assert api.get("/runs/no-such-run").status_code == 404
    assert api.get("/jobs/tick/runs", params={"status": "bogus"}).status_code == 422
    assert api.get("/jobs/never-was/runs").status_code == 404


# --- actions ----------------------------------------------------------------------------


def test_trigger_and_wait_returns_the_result(
    api: ApiDaemon, platform_server: PlatformServer
) -> None:
    response = api.post("/jobs/chain/trigger", params={"wait": "true", "timeout_seconds": 20})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    steps = body["run"]["steps"]
    assert [s["id"] for s in steps] == ["abc123", "http:POST " + platform_server.url + "/echo"]
    assert all(s["attempts"] == 1 for s in steps)
    assert body["run"]["output"]["json"]["password"] == "**********"


def test_trigger_is_refused_while_the_job_is_full(api: ApiDaemon) -> None:
    first = api.post("/jobs/nap/trigger")
    assert first.status_code == 202
    run_id = first.json()["run_id"]
    second = api.post("/jobs/nap/trigger")
    assert second.status_code == 409
    assert "already running" in second.json()["detail"]
    assert api.json(f"/runs/{run_id}")["trigger"] == "manual"
    assert api.post("/jobs/nope/trigger").status_code == 404


def test_trigger_all_runs_every_enabled_job(api: ApiDaemon) -> None:
    wait_until(lambda: api.json("/jobs/nap")["running"] == 0, timeout=10, what="nap to end")
    response = api.post("/trigger")
    assert response.status_code == 202
    body = response.json()
    started = {item["job_id"] for item in body["started"]}
    refused = {item["job_id"] for item in body["refused"]}
    assert started | refused == {"tick", "nap", "chain"} and "nap" in started


def test_a_trigger_shows_at_once_on_the_shared_jobs_page(api: ApiDaemon) -> None:
    wait_until(lambda: api.json("/jobs/nap")["running"] == 0, timeout=10, what="nap to end")

    def nap_running() -> int:
        jobs = {job["id"]: job for job in api.json("/jobs")["jobs"]}
        return int(jobs["nap"]["running"])

    assert nap_running() == 0  # this answer is now shared for a second
    assert api.post("/jobs/nap/trigger").status_code == 202
    assert nap_running() == 1  # the trigger dropped it


def test_create_edit_pause_delete_round_trip(api: ApiDaemon) -> None:
    job = {"id": "made", "label": "Made by API", "every": "1h", "integrationIDs": [["x1"]]}
    created = api.post("/jobs", json=job)
    assert created.status_code == 201, created.text
    assert created.json()["applied"] is True
    assert config_file(api)["jobs"][-1] == job
    assert api.json("/jobs/made")["next_fire_at"] is not None

    edited = api.request("PUT", "/jobs/made", json={**job, "every": "2h"})
    assert edited.status_code == 200 and edited.json()["action"] == "updated"
    assert config_file(api)["jobs"][-1]["every"] == "2h"
    assert api.json("/jobs/made")["schedule"] == "every 2h"

    before_pause = api.daemon.config_path.read_bytes()
    paused = api.post("/jobs/made/pause")
    assert paused.json() == {**paused.json(), "action": "paused", "changed": True}
    assert config_file(api)["jobs"][-1]["enabled"] is False
    assert api.json("/jobs/made")["next_fire_at"] is None
    assert api.post("/jobs/made/pause").json()["changed"] is False
    api.post("/jobs/made/resume")
    assert api.json("/jobs/made")["next_fire_at"] is not None
    assert api.daemon.config_path.read_bytes() == before_pause
    log = api.daemon.log()
    for action in ("created", "updated", "paused", "resumed"):
        assert f"the API {action} job made in {api.daemon.config_path}" in log, action

    deleted = api.request("DELETE", "/jobs/made")
    assert deleted.status_code == 200 and deleted.json()["applied"] is True
    assert "made" not in [j.get("id") for j in config_file(api)["jobs"]]
    assert api.get("/jobs/made").status_code == 404
    assert api.request("DELETE", "/jobs/made").status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"id": "bad", "time": "25:00", "integrationIDs": [["x"]]},
            'jobs[3].time: "25:00" is not valid; expected "HH:MM" or "HH:MM:SS"',
        ),
        (
            {"id": "bad", "every": "1h", "integrationIDs": [["x"]], "colour": "red"},
            "jobs[3].colour: unknown field",
        ),
        ({"id": "bad", "integrationIDs": [["x"]]}, 'expected exactly one of "time"'),
    ],
    ids=["bad-time", "unknown-field", "no-schedule"],
)
def test_invalid_create_is_422_and_leaves_the_file_untouched(
    api: ApiDaemon, body: dict[str, Any], message: str
) -> None:
    before = api.daemon.config_path.read_bytes()
    response = api.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    problems = response.json()["problems"]
    assert any(message in p["message"] for p in problems), problems
    assert problems[0]["message"].startswith("config.json:")
    assert api.daemon.config_path.read_bytes() == before


def test_refused_edits(api: ApiDaemon) -> None:
    before = api.daemon.config_path.read_bytes()
    duplicate = api.post("/jobs", json={"id": "tick", "every": "1h", "integrationIDs": [["x"]]})
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["detail"]
    renamed = api.request("PUT", "/jobs/tick", json={"id": "other", "every": "1h"})
    assert renamed.status_code == 422
    assert "expected 'tick' as in the URL" in renamed.json()["problems"][0]["message"]
    not_json = api.post("/jobs", data=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422
    assert "request: body: invalid JSON: Expecting property name" in not_json.text
    huge = {"id": "big", "every": "1h", "integrationIDs": [["x"]], "description": "x" * 70_000}
    assert api.post("/jobs", json=huge).status_code == 413
    assert api.daemon.config_path.read_bytes() == before


def test_concurrent_creates_all_land(api: ApiDaemon) -> None:
    def create(i: int) -> int:
        job = {"id": f"c{i}", "every": "1h", "integrationIDs": [["x"]]}
        return api.post("/jobs", json=job).status_code

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(create, range(6)))
    assert codes == [201] * 6
    ids = [job.get("id") for job in config_file(api)["jobs"]]
    assert {f"c{i}" for i in range(6)} <= set(ids)
    with ThreadPoolExecutor(6) as pool:
        gone = list(pool.map(lambda i: api.request("DELETE", f"/jobs/c{i}").status_code, range(6)))
    assert gone == [200] * 6


def test_metrics(api: ApiDaemon) -> None:
    api.daemon.wait_runs("tick", 1, status="success")
    assert api.post("/jobs/tick/pause").json()["applied"] is True
    assert api.post("/jobs/tick/resume").json()["applied"] is True
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "_created" not in text  # one series per counter, not two
    for line in (
        'poller_runs_total{job_id="tick",status="success",trigger="schedule"}',
        'poller_jobs{state="enabled"}',
        "poller_runs_inflight ",
        'poller_history_runs{status="success"}',
        "poller_fire_lateness_seconds_bucket",
        "poller_run_duration_seconds_count",
        'poller_step_attempts_total{job_id="tick"}',
        "poller_loop_last_tick_timestamp_seconds",
    ):
        assert line in text, line
    reloads = next(line for line in text.splitlines() if line.startswith("poller_reloads_total"))
    assert float(reloads.split()[-1]) >= 2


def test_metrics_count_the_fires_the_loop_skips(tmp_path: Path) -> None:
    busy = {
        "id": "busy",
        "every": "1s",
        "max_instances": 1,
        "input": {"seconds": 2.5},
        "integrationIDs": [[{"function": "steps:nap"}]],
    }
    running = start_api_daemon(tmp_path, {"settings": {"api": api_settings()}, "jobs": [busy]})
    try:
        running.daemon.wait_runs("busy", 2, status="skipped", timeout=15)
        skipped = len(running.daemon.runs("busy", "skipped"))

        def counted() -> float:
            series = 'poller_runs_total{job_id="busy",status="skipped",trigger="schedule"}'
            lines = [x for x in running.get("/metrics").text.splitlines() if x.startswith(series)]
            return float(lines[0].split()[-1]) if lines else 0.0

        assert wait_until(lambda: counted() >= skipped, 10, what="the skipped runs counted")
        text = running.get("/metrics").text
        lateness = next(
            x for x in text.splitlines() if x.startswith("poller_fire_lateness_seconds_count")
        )
        assert float(lateness.split()[-1]) <= len(running.daemon.runs("busy")) - skipped
    finally:
        assert running.daemon.stop() == 0


def test_an_invalid_config_on_disk_shows_in_status_and_health(tmp_path: Path) -> None:
    tick = {"id": "tick", "every": "1h", "integrationIDs": [[{"function": "steps:tick"}]]}
    good = {"settings": {"api": api_settings()}, "jobs": [tick]}
    running = start_api_daemon(tmp_path, good)
    try:
        assert running.json("/status")["config_file"]["valid"] is True
        assert running.get("/health").json()["warning"] is None
        bad = {**good, "jobs": [{**tick, "every": "soon"}, {"id": "x"}]}
        running.daemon.write_config(bad)
        shown = wait_until(
            lambda: (f := running.json("/status")["config_file"]) and not f["valid"] and f,
            10,
            what="/status saying the file is invalid",
        )
        assert shown["path"].endswith("config.json") and shown["invalid_since"]
        assert shown["problem_count"] == len(shown["problems"]) >= 3
        assert any("jobs[0].every" in problem for problem in shown["problems"])
        health = running.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        assert "on disk is invalid since" in health.json()["warning"]
        assert "the last good config is running" in health.json()["warning"]
        assert running.json("/jobs/tick")["id"] == "tick"  # the last good config runs on
        running.daemon.write_config(good)
        wait_until(
            lambda: running.json("/status")["config_file"]["valid"],
            10,
            what="/status saying the file is valid again",
        )
        assert running.get("/health").json()["warning"] is None
        assert "uvicorn.error" not in running.daemon.log()  # its start says nothing ours does not
        # A file that is gone, or a folder in its place, is no valid config either.
        running.daemon.config_path.unlink()
        gone = wait_until(
            lambda: (f := running.json("/status")["config_file"]) and not f["valid"] and f,
            10,
            what="/status saying the file is gone",
        )
        assert gone["problems"][0].endswith("config.json: file not found")
        running.daemon.config_path.mkdir()
        wait_until(
            lambda: (
                "Is a directory" in " ".join(running.json("/status")["config_file"]["problems"])
            ),
            10,
            what="/status saying a folder is in its place",
        )
        running.daemon.config_path.rmdir()
        running.daemon.write_config(good)
        wait_until(
            lambda: running.json("/status")["config_file"]["valid"],
            10,
            what="/status saying the file is back",
        )
    finally:
        assert running.daemon.stop() == 0


def test_status_totals_count_a_failure_as_soon_as_it_is_recorded(tmp_path: Path) -> None:
    boom = {"id": "boom", "time": "03:00", "integrationIDs": [[{"function": "steps:boom"}]]}
    running = start_api_daemon(tmp_path, {"settings": {"api": api_settings()}, "jobs": [boom]})
    try:
        assert running.json("/status")["totals"].get("failed", 0) == 0
        ended = running.post("/jobs/boom/trigger?wait=true")
        assert ended.status_code == 200 and ended.json()["status"] == "failed"
        status = running.json("/status")  # the first one after: no stale counts
        assert status["totals"]["failed"] == 1 and status["success_rate"] == 0.0
    finally:
        assert running.daemon.stop() == 0


def test_a_monitored_trigger_returns_items_diff_and_alerts_and_metrics_count_them(
    tmp_path: Path,
) -> None:
    install(tmp_path, a=1, b=2, down=3)
    job = {
        "id": "watch",
        "time": "03:00",
        "detect_changes": True,
        "alerts": {"on": ["failure", "change"], "channels": ["hook"]},
        "integrationIDs": WATCH_CHAIN,
    }
    with Recorder() as hook:
        settings = {
            "api": api_settings(),
            "alerts": {"hook": {"type": "webhook", "url": f"{hook.url}/hook"}},
        }
        running = start_api_daemon(tmp_path, {"settings": settings, "jobs": [job]})
        try:

            def trigger() -> dict[str, Any]:
                ended = running.post("/jobs/watch/trigger?wait=true")
                assert ended.status_code == 200, ended.text
                run: dict[str, Any] = ended.json()["run"]
                return run

            def delivered(run_id: str) -> list[tuple[str, str]]:
                return wait_until(
                    lambda: (
                        (a := running.json(f"/runs/{run_id}")["alerts"])
                        and all(e["status"] != "pending" for e in a)
                        and sorted((e["kind"], e["status"]) for e in a)
                    ),
                    what=f"run {run_id}'s alerts to end",
                )

            first = trigger()
            assert (first["status"], first["changed"], first["diff"]) == ("success", None, None)
            counts = [first[f"items_{n}"] for n in ("processed", "succeeded", "failed")]
            assert counts == [3, 2, 1]
            assert first["errors"] == ["item down: RuntimeError: source down is not answering"]
            assert delivered(first["run_id"]) == [("failure", "sent")]

            answer(tmp_path, a=5, b=2, down=3)
            second = trigger()
            assert second["changed"] is True and second["changes_detected"] == 1
            assert second["diff"] == [
                {"path": "items.a.price", "change": "changed", "old": 1, "new": 5, "count": None}
            ]
            # Still failing: the rate limit (300 s) holds the second failure alert back.
            assert delivered(second["run_id"]) == [("change", "sent"), ("failure", "held")]
            again = running.json(f"/runs/{second['run_id']}")
            assert (again["alerts_sent"], again["alert_errors"]) == (1, [])
            metrics = running.get("/metrics").text
            for line in (
                'poller_alerts_total{outcome="sent"} 2.0',
                'poller_alerts_total{outcome="held"} 1.0',
                'poller_alerts_total{outcome="failed"} 0.0',
            ):
                assert line in metrics, line
        finally:
            assert running.daemon.stop() == 0
    assert [body["kind"] for _, body in hook.requests] == ["failure", "change"]


# --- security ---------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/"),
    ("GET", "/status"),
    ("GET", "/logs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/tick"),
    ("GET", "/jobs/tick/runs"),
    ("GET", "/runs/x"),
    ("GET", "/metrics"),
    ("POST", "/jobs/tick/trigger"),
    ("POST", "/trigger"),
    ("POST", "/jobs"),
    ("PUT", "/jobs/tick"),
    ("DELETE", "/jobs/tick"),
    ("POST", "/jobs/tick/pause"),
    ("POST", "/jobs/tick/resume"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_every_endpoint_but_health_needs_the_key(api: ApiDaemon, method: str, path: str) -> None:
    url = api.url + path
    missing = requests.request(method, url, json={}, timeout=10)
    assert missing.status_code == 401, missing.text
    assert missing.json()["detail"] == (
        "this endpoint needs the API key: send it as X-API-Key or Authorization: Bearer"
    )
    wrong = requests.request(method, url, json={}, headers={"X-API-Key": "wrong"}, timeout=10)
    assert wrong.status_code == 403
    bearer = {"Authorization": "Bearer wrong"}
    assert requests.request(method, url, json={}, headers=bearer, timeout=10).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/ui",
        "/ui/assets/page.js",
        "/ui/assets/page.css",
        "/docs",
        "/docs/assets/swagger-ui-bundle.js",
        "/openapi.json",
    ],
)
def test_open_pages_need_no_key(api: ApiDaemon, path: str) -> None:
    assert requests.get(api.url + path, timeout=10).status_code == 200


def test_docs_are_served_from_the_daemon_itself(api: ApiDaemon) -> None:
    html = requests.get(api.url + "/docs", timeout=10).text
    assert "/docs/assets/swagger-ui-bundle.js" in html and "/openapi.json" in html
    assert "cdn" not in html.lower()  # the docs work on a machine with no internet


def test_secrets_never_appear_in_responses(api: ApiDaemon) -> None:
    api.post("/jobs/chain/trigger", params={"wait": "true", "timeout_seconds": 20})
    run_ids = [run["run_id"] for run in api.json("/jobs/chain/runs")]
    texts = [
        api.get(path).text
        for path in (
            "/",
            "/status",
            "/logs?lines=1000",
            "/jobs",
            "/jobs/chain",
            "/jobs/chain/runs?limit=100",
            "/metrics",
            "/openapi.json",
            *(f"/runs/{run_id}" for run_id in run_ids),
        )
    ]
    for secret in (PASSWORD, HEADER_TOKEN, API_KEY):
        assert not [text for text in texts if secret in text], secret


def test_a_secret_written_into_a_jobs_label_or_description_is_masked(api: ApiDaemon) -> None:
    job = {
        "id": "leaky",
        "label": "${PLATFORM_PW}",
        "description": "x ${POLLER_API_KEY} y",
        "every": "1h",
        "integrationIDs": [["x1"]],
    }
    assert api.post("/jobs", json=job).status_code == 201
    try:
        texts = [api.get(path).text for path in ("/jobs", "/jobs/leaky", "/status")]
        for secret in (PASSWORD, API_KEY):
            assert not [text for text in texts if secret in text], secret
        assert api.json("/jobs/leaky")["description"].startswith("x *")
    finally:
        assert api.request("DELETE", "/jobs/leaky").status_code == 200


def test_the_key_is_also_taken_as_a_bearer_token(api: ApiDaemon) -> None:
    # What Prometheus sends with `authorization: {credentials: KEY}`.
    headers = {"Authorization": f"Bearer {API_KEY}"}
    response = requests.get(api.url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200 and "poller_jobs" in response.text


# --- methods and the OpenAPI document ---------------------------------------------------


def test_head_is_answered_as_get_without_a_body(api: ApiDaemon) -> None:
    for path, keyed in (("/health", False), ("/favicon.ico", False), ("/jobs", True)):
        headers = {"X-API-Key": API_KEY} if keyed else {}
        head = requests.head(api.url + path, headers=headers, timeout=10)
        assert head.status_code == 200, (path, head.status_code)
        assert head.content == b""
        assert head.headers["content-type"] == api.get(path).headers["content-type"]
    assert requests.head(api.url + "/jobs", timeout=10).status_code == 401  # still keyed


ALLOWED = [
    ("/jobs", "GET, HEAD, OPTIONS, POST"),
    ("/jobs/tick", "DELETE, GET, HEAD, OPTIONS, PUT"),
    ("/jobs/tick/trigger", "OPTIONS, POST"),
    ("/health", "GET, HEAD, OPTIONS"),
    ("/", "GET, HEAD, OPTIONS"),
]


@pytest.mark.parametrize(("path", "allow"), ALLOWED, ids=[path for path, _ in ALLOWED])
def test_options_and_405_name_every_method_of_the_path(
    api: ApiDaemon, path: str, allow: str
) -> None:
    options = api.request("OPTIONS", path)
    assert options.status_code == 204, options.text
    assert options.headers["allow"] == allow and options.content == b""
    refused = api.request("PATCH", path, json={})
    assert refused.status_code == 405
    assert refused.headers["allow"] == allow
    assert refused.json() == {"detail": "Method Not Allowed", "problems": []}


def test_options_grants_a_cross_site_preflight_nothing(api: ApiDaemon) -> None:
    preflight = {
        "Origin": "https://evil.com",
        "Access-Control-Request-Method": "DELETE",
        "Access-Control-Request-Headers": "x-api-key",
    }
    answer = requests.options(api.url + "/jobs/tick", headers=preflight, timeout=10)
    assert answer.status_code == 204  # no key needed: /openapi.json says as much
    assert not [name for name in answer.headers if name.lower().startswith("access-control-")]
    assert requests.options(api.url + "/nope", timeout=10).status_code == 404


def test_every_operation_says_what_it_does(api: ApiDaemon) -> None:
    document = api.json("/openapi.json")
    summaries = {
        (method.upper(), path): operation.get("summary", "")
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    assert summaries[("GET", "/health")] == "Is the daemon healthy? (no key needed)"
    for (method, path), summary in summaries.items():
        words = document["paths"][path][method.lower()]["operationId"].split("_")
        defaults = {" ".join(words[:n]).title() for n in range(1, len(words) + 1)}
        assert summary and summary not in defaults, (method, path, summary)
    listed = {(e["method"], e["path"]): e["summary"] for e in api.json("/")["endpoints"]}
    assert listed == summaries


def refused_start(folder: Path, api: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = {"settings": {"api": api}, "jobs": []}
    daemon = DaemonProcess(folder, config)
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("key", [{}, {"api_key": ""}], ids=["no-key", "empty-key"])
def test_no_key_on_a_public_address_refuses_to_start(tmp_path: Path, key: dict[str, str]) -> None:
    result = refused_start(tmp_path, {"enabled": True, "host": "0.0.0.0", "port": 0, **key})
    assert result.returncode == 1
    assert (
        "the API cannot start: settings.api.host is '0.0.0.0' but settings.api.api_key "
        "is not set" in result.stderr
    )
    assert "Poller started" not in (tmp_path / "logs" / "logfile.log").read_text()


def test_a_port_in_use_refuses_to_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = refused_start(tmp_path, {"enabled": True, "port": port})
    assert result.returncode == 1
    assert f"the API cannot start: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_health_is_503_when_the_loop_stalls_and_while_stopping(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    # In process: a stalled loop cannot be staged in a subprocess whose API must still answer.
    config_path = tmp_path / "config.json"
    config_path.write_text('{"jobs": []}')
    store = SqliteStore(tmp_path / "poller.db")
    store.acquire_daemon_lock()
    daemon = Daemon(load_config(config_path), store, fake_clock)
    server = serve(build_app(daemon, config_path, "key", None), bind("127.0.0.1", 0))
    try:
        assert requests.get(server.url + "/health", timeout=10).json()["status"] == "healthy"
        fake_clock.advance(STALL_SECONDS + 1)
        stalled = requests.get(server.url + "/health", timeout=10)
        assert stalled.status_code == 503
        assert stalled.json()["status"] == "unhealthy"
        assert stalled.json()["reason"] == "the scheduler loop has not run for 91s"
        daemon.last_tick = fake_clock.now()
        daemon.stop(0)
        stopped = requests.get(server.url + "/health", timeout=10)
        assert stopped.status_code == 503 and stopped.json()["status"] == "stopping"
        key = {"X-API-Key": "key"}
        status = requests.get(server.url + "/status", headers=key, timeout=10).json()
        assert status["scheduler_running"] is False
    finally:
        server.stop()
        store.close()
