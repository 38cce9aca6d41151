"""`app.py run` with and without --alerts, `app.py alert-test` and `history` on monitored
jobs (SPEC §9), as real subprocesses against a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemonproc import run_app, write
from tests.receivers import Recorder, unused_port
from tests.watched import WATCH_CHAIN, answer, install

TOKEN = "hook-token-9c1e77"


@pytest.fixture
def hook() -> Iterator[Recorder]:
    with Recorder() as recorder:
        yield recorder


def folder_for(tmp_path: Path, hook_url: str) -> Path:
    install(tmp_path, a=1, b=2, c=3)
    write(
        tmp_path,
        {
            "settings": {
                "alerts": {
                    "hook": {"type": "webhook", "url": f"{hook_url}/hook?token=${{HOOK_TOKEN}}"},
                    "closed": {
                        "type": "webhook",
                        "url": f"http://127.0.0.1:{unused_port()}/x?token=${{HOOK_TOKEN}}",
                        "timeout_seconds": 1,
                    },
                },
                "default_alerts": {"on": ["failure", "change"], "channels": ["hook"]},
                "alert_window_seconds": 0,
            },
            "jobs": [
                {
                    "id": "watch",
                    "every": "1h",
                    "detect_changes": True,
                    "integrationIDs": WATCH_CHAIN,
                }
            ],
        },
    )
    return tmp_path


def env() -> dict[str, str]:
    return {**os.environ, "HOOK_TOKEN": TOKEN}


def run(folder: Path, *args: str) -> dict[str, Any]:
    done = run_app(folder, "run", "watch", *args, env=env())
    assert done.returncode == 0, done.stderr
    record: dict[str, Any] = json.loads(done.stdout)
    return record


def test_a_manual_run_says_what_changed_and_alerts_only_with_the_alerts_flag(
    tmp_path: Path, hook: Recorder
) -> None:
    folder = folder_for(tmp_path, hook.url)
    first = run(folder, "--alerts")
    assert first["changed"] is None  # the first compared run is the baseline
    assert (first["items_processed"], first["items_succeeded"]) == (3, 3)

    answer(folder, a=1, b=5, c=3)
    quiet = run(folder)
    assert quiet["changed"] is True and quiet["alerts"] == []
    assert quiet["diff"] == [{"path": "items.b.price", "change": "changed", "old": 2, "new": 5}]
    again = run(folder)  # without --alerts the baseline stays where it was
    assert again["changed"] is True and hook.requests == []

    alerted = run(folder, "--alerts")
    assert alerted["changed"] is True
    assert alerted["alerts"] == [
        {"kind": "change", "channel": "hook", "status": "sent", "error": None, "attempts": 1}
    ]
    assert alerted["alerts_sent"] == 1
    ((path, body),) = hook.wait_for(1)
    assert path == f"/hook?token={TOKEN}"
    assert body["kind"] == "change" and body["run_id"] == alerted["run_id"]
    assert run(folder)["changed"] is False  # --alerts moved the baseline

    table = run_app(folder, "history", "watch", env=env()).stdout
    line = next(line for line in table.splitlines() if alerted["run_id"] in line)
    assert "changed, items 3/3, 1 alert" in line
    full = run_app(folder, "history", "--run", alerted["run_id"], env=env()).stdout
    assert "changed    yes" in full and "  ~ items.b.price: 2 → 5" in full
    assert "alert      change to hook: sent" in full


def test_failed_items_are_counted_listed_and_alerted_from_a_manual_run(
    tmp_path: Path, hook: Recorder
) -> None:
    folder = folder_for(tmp_path, hook.url)
    answer(folder, a=1, down=0)
    record = run(folder, "--alerts")
    assert record["status"] == "success"  # one item of two failed: not all of them
    assert (record["items_processed"], record["items_failed"]) == (2, 1)
    assert record["errors"] == ["item down: RuntimeError: source down is not answering"]
    ((_, body),) = hook.wait_for(1)
    assert body["kind"] == "failure"
    assert "item down: RuntimeError: source down is not answering" in body["text"]
    table = run_app(folder, "history", env=env()).stdout
    assert "items 1/2, 1 alert" in table


def test_alert_test_sends_one_and_says_why_a_channel_fails_without_its_secret(
    tmp_path: Path, hook: Recorder
) -> None:
    folder = folder_for(tmp_path, hook.url)
    sent = run_app(folder, "alert-test", "hook", env=env())
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == "sent a test alert over channel hook (webhook)\n"
    ((path, body),) = hook.wait_for(1)
    assert path == f"/hook?token={TOKEN}"  # the secret goes only where it belongs
    assert body["kind"] == "test" and "alert-test" in body["text"]
    assert TOKEN not in json.dumps(body) + sent.stdout + sent.stderr

    refused = run_app(folder, "alert-test", "closed", env=env())
    assert refused.returncode == 1
    assert "channel closed (webhook) failed: could not connect" in refused.stderr
    assert TOKEN not in refused.stdout + refused.stderr

    unknown = run_app(folder, "alert-test", "hok", env=env())
    assert unknown.returncode == 2
    assert "no channel 'hok' in settings.alerts" in unknown.stderr
    assert "did you mean hook?" in unknown.stderr
    assert "Traceback" not in unknown.stderr
