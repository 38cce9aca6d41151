"""The executor contract: a daemon's jobs behave the same whether their runs run on its own
pool (settings.executor local) or on Kafka workers (SPEC §11) — dry runs, blackout days,
max_instances, change detection, alerts and the API's trigger-and-wait.

A new executor passes by adding its kind to the `runs_on` parameters; the tests only start
a daemon on `Runs.daemon` and talk to its API. Real daemons and workers (`python app.py`),
the stand-in platform, Tansu for Kafka, a real webhook receiver for alerts.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiproc import ApiDaemon, api_settings, start_api_daemon
from tests.daemonproc import DaemonProcess, wait_until
from tests.kafkaexec import ENVIRONMENTS, PASSWORD, Deployment
from tests.platform import PlatformServer
from tests.receivers import Recorder

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Runs:
    """Starts a daemon whose runs run on one kind of executor (with a worker, for Kafka)."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.tmp_path: Path = request.getfixturevalue("tmp_path")
        self.platform: PlatformServer = request.getfixturevalue("platform")
        self.deployment: Deployment | None = (
            request.getfixturevalue("deployment") if kind == "kafka" else None
        )
        self.started: list[DaemonProcess] = []

    def daemon(self, jobs: list[dict[str, Any]], **settings: Any) -> ApiDaemon:
        if self.deployment is not None:
            api = self.deployment.daemon(jobs, **settings)
            worker = self.deployment.worker("w1")
            wait_until(lambda: "assigned" in worker.log(), what="the worker in the group")
            return api
        config = {
            "settings": {"timezone": "UTC", "api": api_settings(), **settings},
            "environments": ENVIRONMENTS,
            "jobs": jobs,
        }
        folder = self.tmp_path / "daemon"
        folder.mkdir(exist_ok=True)
        api = start_api_daemon(folder, config, PLATFORM_URL=self.platform.url, PLATFORM_PW=PASSWORD)
        self.started.append(api.daemon)
        return api

    def stop(self) -> None:
        for daemon in self.started:
            daemon.stop()


@pytest.fixture(params=["local", "kafka"])
def runs_on(request: pytest.FixtureRequest) -> Iterator[Runs]:
    runs = Runs(request.param, request)
    yield runs
    runs.stop()


def trigger(api: ApiDaemon, job_id: str) -> dict[str, Any]:
    """Trigger a run and wait for its record."""
    response = api.post(f"/jobs/{job_id}/trigger", params={"wait": "true", "timeout_seconds": 30})
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()["run"]
    return run


def test_a_run_calls_the_platform_once_and_a_dry_run_not_at_all(runs_on: Runs) -> None:
    sync = {"id": "sync", "time": "03:00", "integrationIDs": [["sync-a"]]}
    api = runs_on.daemon([sync, {**sync, "id": "rehearse", "dry_run": True}])
    real = trigger(api, "sync")
    assert real["status"] == "success" and real["dry_run"] is False, real
    assert len(runs_on.platform.calls("sync-a")) == 1
    rehearsal = trigger(api, "rehearse")
    assert rehearsal["status"] == "success" and rehearsal["dry_run"] is True, rehearsal
    assert len(runs_on.platform.calls("sync-a")) == 1  # nothing sent
    assert api.json("/jobs/rehearse")["last_run"]["run_id"] == rehearsal["run_id"]


def test_a_blackout_day_skips_the_fire_and_runs_nothing(runs_on: Runs) -> None:
    job = {"id": "rest", "every": "1s", "blackout_days": ALL_DAYS, "integrationIDs": [["x"]]}
    api = runs_on.daemon([job])
    api.daemon.wait_runs("rest", 2, status="skipped", timeout=15)
    reasons = [r["reason"] for r in api.daemon.runs("rest")]
    assert all("blackout day" in reason for reason in reasons), reasons
    assert runs_on.platform.calls("x") == []
    if runs_on.deployment is not None:  # no request published for a fire skipped
        assert runs_on.deployment.messages(runs_on.deployment.runs_topic) == []


def test_max_instances_skips_fires_and_refuses_triggers_while_the_job_is_full(
    runs_on: Runs,
) -> None:
    busy = {
        "id": "busy",
        "every": "1s",
        "max_instances": 1,
        "input": {"seconds": 2.5},
        "integrationIDs": [[{"function": "steps:nap"}]],
    }
    api = runs_on.daemon([busy])
    api.daemon.wait_runs("busy", 2, status="skipped", timeout=20)
    wait_until(lambda: api.json("/jobs/busy")["running"] == 1, what="a run under way")
    refused = api.post("/jobs/busy/trigger")
    assert refused.status_code == 409 and "already running" in refused.json()["detail"]
    api.daemon.wait_runs("busy", 1, status="success", timeout=20)
    runs = api.daemon.runs("busy")
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert all("already running (1 of max_instances 1)" in r["reason"] for r in skipped)
    ran = sorted((r["started_at"], r["finished_at"]) for r in runs if r["status"] == "success")
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(ran))


def test_changes_are_detected_and_alerted_and_a_failure_too(runs_on: Runs) -> None:
    answer = runs_on.tmp_path / "answer.json"
    watch = {
        "id": "watch",
        "time": "03:00",
        "input": {"file": str(answer)},
        "detect_changes": {"ignore": ["fetched_at"]},
        "alerts": {"channels": ["hook"], "on": ["change", "failure"]},
        "integrationIDs": [[{"function": "steps:answer"}]],
    }
    with Recorder() as hook:
        alerts = {"hook": {"type": "webhook", "url": f"{hook.url}/hook"}}
        api = runs_on.daemon([watch], alerts=alerts, alert_window_seconds=0)
        answer.write_text(json.dumps({"price": 1, "fetched_at": 1}))
        first = trigger(api, "watch")
        answer.write_text(json.dumps({"price": 1, "fetched_at": 2}))
        same = trigger(api, "watch")
        answer.write_text(json.dumps({"price": 2, "fetched_at": 3}))
        changed = trigger(api, "watch")
        answer.unlink()
        failed = trigger(api, "watch")
        kinds = [body["kind"] for _, body in hook.wait_for(2)]
    assert [first["changed"], same["changed"], changed["changed"]] == [None, False, True]
    [diff] = changed["diff"]
    assert (diff["path"], diff["change"], diff["old"], diff["new"]) == ("price", "changed", 1, 2)
    assert failed["status"] == "failed" and "answer.json" in failed["reason"], failed
    assert kinds == ["change", "failure"]
