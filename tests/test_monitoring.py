"""Monitoring (SPEC §9): for_each fan-out, change detection, alerts over a real webhook.

The receiver is a real HTTP server on 127.0.0.1 that records every request; runs are real
chains of `function` entries (tests/data/monitoring_steps.py is written per test).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from poller.clock import SystemClock
from poller.config.load import parse_config
from poller.config.models import Config
from poller.errors import ConfigError
from poller.monitor import Monitor
from poller.redaction import Redactor
from poller.run import chain
from poller.run.client import ClientPool
from poller.run.results import RunResult
from poller.store import SqliteStore
from tests.daemonproc import wait_until
from tests.receivers import Recorder

STEPS = """
import threading, time
state = {"now": 0, "max": 0}
lock = threading.Lock()

def sources(data, context):
    return {"sources": [{"name": f"s{i}", "daily": i != 2, "fail": i == 4} for i in range(6)]}

def fetch(data, context):
    with lock:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
    try:
        time.sleep(0.05)
        if data.get("fail"):
            raise RuntimeError(f"source {data['name']} is down")
        return {"name": data["name"], "price": data.get("price", 1)}
    finally:
        with lock:
            state["now"] -= 1

def numbers(data, context):
    return {"numbers": [{"n": n} for n in range(data["count"])]}

def answer(data, context):
    import json, pathlib
    return json.loads(pathlib.Path(data["file"]).read_text())
"""


@pytest.fixture
def hook() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.server.shutdown()


STEPS_FOLDER: list[Path] = []


def make_config(tmp_path: Path, hook_url: str, jobs: list[dict[str, Any]]) -> Config:
    """A config in one folder for the whole module: functions are imported once, by name,
    from their config's folder."""
    if not STEPS_FOLDER:
        STEPS_FOLDER.append(tmp_path)
        (tmp_path / "monitoring_steps.py").write_text(STEPS)
    folder = STEPS_FOLDER[0]
    raw = {
        "settings": {
            "alerts": {"hook": {"type": "webhook", "url": f"{hook_url}/hook?token=s3cr3t-T0k"}},
            "alert_window_seconds": 0,
        },
        "jobs": jobs,
    }
    return parse_config(json.dumps(raw), folder / "config.json")


def runner(config: Config, store: SqliteStore) -> tuple[Monitor, Callable[[str], RunResult]]:
    redactor = Redactor(config.secret_values())
    clock = SystemClock()
    saved: dict[str, RunResult] = {}
    monitor = Monitor(config, store, redactor, clock, save=lambda r: saved.update({r.run_id: r}))
    clients = ClientPool(config.environments, clock, redactor=redactor)

    def run(job_id: str) -> RunResult:
        job = config.job_map[job_id]
        result = chain.run_job(job, config, clients, clock=clock, changes=monitor.changes)
        result, sends = monitor.after_run(job, result)
        monitor.dispatch(result, sends)
        assert monitor.idle(10)
        return saved.get(result.run_id, result)

    return monitor, run


FAN_OUT = {
    "id": "fan",
    "every": "1h",
    "integrationIDs": [
        [{"function": "monitoring_steps:sources"}],
        [
            {
                "for_each": "sources",
                "key": "name",
                "max_parallel": 2,
                "when": {"token": "daily", "equals": True},
                "steps": [[{"function": "monitoring_steps:fetch"}]],
            }
        ],
    ],
    "alerts": {"channels": ["hook"]},
}


def test_for_each_runs_each_chosen_item_and_one_failure_does_not_stop_the_others(
    tmp_path: Path, hook: Recorder
) -> None:
    config = make_config(tmp_path, hook.url, [FAN_OUT])
    store = SqliteStore(tmp_path / "poller.db")
    monitor, run = runner(config, store)
    try:
        result = run("fan")
        steps = sys.modules["monitoring_steps"]  # imported by name, process-wide
        assert steps.state["max"] == 2  # max_parallel, measured inside the items
    finally:
        monitor.close()
        store.close()
    record = result.to_dict()
    assert record["status"] == "success"
    assert (record["items_processed"], record["items_succeeded"], record["items_failed"]) == (
        5,
        4,
        1,
    )
    items = record["output"]["items"]
    assert [item["key"] for item in items] == ["s0", "s1", "s3", "s4", "s5"]  # s2 left out
    assert items[3]["status"] == "failed" and "s4 is down" in items[3]["error"]
    assert record["errors"] == ["item s4: RuntimeError: source s4 is down"]
    [(path, body)] = hook.wait_for(1)
    assert body["kind"] == "failure" and "1 of 5 item(s) failed" in body["text"]
    assert "s3cr3t-T0k" not in json.dumps(body) and path == "/hook?token=s3cr3t-T0k"
    assert record["alerts"][0]["status"] == "sent" and record["alerts_sent"] == 1


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def test_for_each_over_http_keeps_max_parallel_at_the_server_with_no_retry_and_no_leak(
    tmp_path: Path, hook: Recorder
) -> None:
    """48 items, one plain `http` call each, at max_parallel 16 (more than requests'
    10 pooled connections) to a keep-alive server: at most 16 requests at once there, and
    exactly one request per item; three runs leave no file descriptor open."""
    with Recorder(delay_seconds=0.2, answer="json", keep_alive=True) as api:
        fan = {
            "id": "wide",
            "every": "1h",
            "input": {"count": 48},
            "integrationIDs": [
                [{"function": "monitoring_steps:numbers"}],
                [
                    {
                        "for_each": "numbers",
                        "key": "n",
                        "max_parallel": 16,
                        "steps": [[{"http": {"method": "GET", "url": f"{api.url}/item"}}]],
                    }
                ],
            ],
        }
        config = make_config(tmp_path, hook.url, [fan])
        store = SqliteStore(tmp_path / "poller.db")
        monitor, run = runner(config, store)
        try:
            run("wide")  # imports, the store's first writes: what stays open for good
            before = open_fds()
            results = [run("wide") for _ in range(3)]
            settled = wait_until(
                lambda: open_fds() <= before, timeout=5, what="the runs' connections to close"
            )
        finally:
            monitor.close()
            store.close()
    assert settled
    assert [(r.status, r.items_succeeded, r.items_failed) for r in results] == [
        ("success", 48, 0)
    ] * 3
    assert len(api.received) == 4 * 48  # one request per item: none was sent again
    assert api.max_concurrent == 16


def change_job(answer: Path, **fields: Any) -> dict[str, Any]:
    return {
        "id": "watch",
        "every": "1h",
        "input": {"file": str(answer)},
        "integrationIDs": [[{"function": "monitoring_steps:answer"}]],
        "alerts": {"channels": ["hook"], "on": ["change"]},
        **fields,
    }


def test_a_change_is_alerted_with_its_diff_ignored_paths_are_not_and_the_first_run_is_silent(
    tmp_path: Path, hook: Recorder
) -> None:
    answer = tmp_path / "answer.json"
    spec = {"ignore": ["fetched_at", "rows.*.seen"]}
    config = make_config(tmp_path, hook.url, [change_job(answer, detect_changes=spec)])
    store = SqliteStore(tmp_path / "poller.db")
    monitor, run = runner(config, store)
    try:
        answer.write_text(json.dumps({"price": 1, "fetched_at": 1, "rows": [{"seen": 1}]}))
        first = run("watch")
        answer.write_text(json.dumps({"price": 1, "fetched_at": 2, "rows": [{"seen": 2}]}))
        same = run("watch")
        answer.write_text(json.dumps({"price": 2, "fetched_at": 3, "rows": [{"seen": 3}]}))
        changed = run("watch")
    finally:
        monitor.close()
        store.close()
    assert first.changed is None and same.changed is False and changed.changed is True
    assert changed.diff == ({"path": "price", "change": "changed", "old": 1, "new": 2},)
    assert changed.changes_detected == 1
    [(_, body)] = hook.wait_for(1)
    assert body["kind"] == "change" and body["diff"][0]["path"] == "price"
    assert "price: 1 → 2" in body["text"]
    # The baseline survives a restart: a new store handle compares with it.
    store = SqliteStore(tmp_path / "poller.db")
    monitor, run = runner(config, store)
    try:
        again = run("watch")
    finally:
        monitor.close()
        store.close()
    assert again.changed is False


def test_recovery_is_sent_once_after_several_failures_even_across_a_restart(
    tmp_path: Path, hook: Recorder
) -> None:
    answer = tmp_path / "answer.json"  # missing: the function fails
    config = make_config(tmp_path, hook.url, [change_job(answer, alerts={"channels": ["hook"]})])
    for life in range(2):  # two daemons' lives: fail, fail | succeed, succeed
        store = SqliteStore(tmp_path / "poller.db")
        monitor, run = runner(config, store)
        try:
            for _ in range(2):
                assert run("watch").status == ("failed" if life == 0 else "success")
        finally:
            monitor.close()
            store.close()
        answer.write_text("{}")
    assert [body["kind"] for _, body in hook.wait_for(3)] == ["failure", "failure", "recovery"]


def test_an_unknown_channel_and_a_secret_ping_url_are_clear_config_errors(tmp_path: Path) -> None:
    raw = {
        "jobs": [
            {
                "id": "a",
                "every": "1m",
                "ping_url": "ftp://hc-ping.example/S3CRET-UUID",
                "alerts": {"channels": ["slack"]},
                "integrationIDs": [["x"]],
            }
        ]
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(raw, indent=1), tmp_path / "config.json")
    assert "jobs[0].ping_url" in str(caught.value) and "S3CRET" not in str(caught.value)
    raw["jobs"][0]["ping_url"] = "https://hc-ping.example/S3CRET-UUID"
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.alerts\.channels\[0\]: no alert channel"):
        parse_config(json.dumps(raw, indent=1), tmp_path / "config.json")
