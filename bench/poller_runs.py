"""Poller's side of each workload: the real daemon (app.run_daemon) in this process's main thread.

Results come from its run history; a monitor thread measures, then stops it with SIGTERM.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from measure import (
    DRAIN_SECONDS,
    LEAD_SECONDS,
    NOOP_CHAIN,
    SETTLE_SECONDS,
    TASKS_MODULE,
    Params,
    Result,
    cpu_seconds,
    daily_times,
    lateness_result,
    rss_kib,
    sleep_until,
    thread_cpu_between,
)


def write_poller_config(
    folder: Path,
    jobs: list[dict[str, Any]],
    settings: dict[str, Any] | None = None,
    environments: dict[str, Any] | None = None,
) -> Path:
    """config.json (and the function module its jobs call) in `folder`."""
    (folder / "benchtasks.py").write_text(TASKS_MODULE)
    path = folder / "config.json"
    body = {"settings": settings or {}, "environments": environments or {}, "jobs": jobs}
    path.write_text(json.dumps(body, indent=1))
    return path


def daily_config(folder: Path, count: int) -> Path:
    """(c): `count` daily jobs; written by the parent, so the child's RSS baseline is clean."""
    jobs = [
        {"id": f"daily{i:05d}", "time": hhmm, "integrationIDs": NOOP_CHAIN}
        for i, hhmm in enumerate(daily_times(count))
    ]
    return write_poller_config(folder, jobs)


class _StartedHandler(logging.Handler):
    """Notes when the daemon logs "Poller started": every job is scheduled by then."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Poller started"):
            self.at = time.perf_counter()
            self.started.set()


def run_poller(config_path: Path, monitor: Callable[[], None]) -> float:
    """Run app.run_daemon here until `monitor` (a thread, started with the daemon) returns.

    Returns time.perf_counter() at "Poller started".
    """
    import app
    from poller.commands.options import ConfigSource

    handler = _StartedHandler()
    logging.getLogger("poller").addHandler(handler)

    def watch() -> None:
        if handler.started.wait(120):
            try:
                monitor()
            finally:
                os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="monitor", daemon=True).start()
    code = app.run_daemon(ConfigSource(config_path, "--config"))
    if code != 0 or not handler.started.is_set():
        raise RuntimeError(f"the daemon exited with {code} (log in {config_path.parent})")
    return handler.at


def poller_runs(folder: Path) -> list[dict[str, Any]]:
    from poller.store import SqliteStore

    store = SqliteStore(folder / "data" / "poller.db")
    try:
        return store.recent(limit=10_000_000)
    finally:
        store.close()


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def poller_a(params: Params) -> Result:
    from poller.config.load import load_config
    from poller.plans import grid_of
    from poller.store import JobState, SqliteStore

    count, duration, folder = params["jobs"], params["duration"], Path(params["folder"])
    jobs = [
        {"id": f"every{i:04d}", "every": "1s", "integrationIDs": NOOP_CHAIN} for i in range(count)
    ]
    config_path = write_poller_config(folder, jobs, {"shutdown_grace_seconds": 60})
    config = load_config(config_path)
    first = math.ceil(time.time()) + LEAD_SECONDS
    # `every` anchors at the daemon's start; stored anchors stagger the jobs over a second.
    store = SqliteStore(config.settings.state_db)
    store.save_job_states(
        {
            job.id: JobState(
                grid_of(config, job), datetime.fromtimestamp(first - 1 + i / count, UTC), None
            )
            for i, job in enumerate(config.jobs)
        }
    )
    store.close()
    measured: dict[str, float] = {}
    threads: dict[str, float] = {}

    def monitor() -> None:
        measured["started_late"] = time.time() > first
        measured["cpu"], by_thread = thread_cpu_between(first, first + duration)
        threads.update(by_thread)
        sleep_until(first + duration + DRAIN_SECONDS)

    run_poller(config_path, monitor)
    runs = poller_runs(folder)
    fires = [
        (epoch(run["scheduled_for"]), epoch(run["started_at"]))
        for run in runs
        if run["status"] != "skipped" and run.get("scheduled_for")
    ]
    skipped = sum(run["status"] == "skipped" for run in runs)
    result = lateness_result(fires, first, first + duration, measured["cpu"], skipped, threads)
    result["late_start"] = bool(measured["started_late"])
    return result


def poller_b(params: Params) -> Result:
    from poller.store import SqliteStore

    count, folder = params["jobs"], Path(params["folder"])
    due = math.ceil(time.time()) + LEAD_SECONDS
    at = datetime.fromtimestamp(due, UTC).strftime("%H:%M:%S")
    jobs = [{"id": f"call{i:03d}", "time": at, "integrationIDs": [["slow"]]} for i in range(count)]
    settings = {"timezone": "UTC", "max_workers": params["workers"], "shutdown_grace_seconds": 60}
    environments = {"bench": {"base_url": params["url"], "retries": 0}}
    config_path = write_poller_config(folder, jobs, settings, environments)
    measured: dict[str, bool] = {}

    def monitor() -> None:
        measured["started_late"] = time.time() > due
        store = SqliteStore(folder / "data" / "poller.db")
        try:
            while time.time() < due + params["timeout"]:
                totals = store.totals()
                if sum(totals.values()) - totals.get("running", 0) >= count:
                    break
                time.sleep(0.2)
        finally:
            store.close()

    run_poller(config_path, monitor)
    runs = poller_runs(folder)
    done = [epoch(run["finished_at"]) for run in runs if run["status"] == "success"]
    return {
        "ran": len(done),
        "not_run": count - len(done),
        "last_s": max(done) - due if done else math.nan,
        "workers": params["workers"],
        "late_start": measured["started_late"],
    }


def poller_c(params: Params) -> Result:
    import app  # noqa: F401 - imported before the RSS baseline, as every other scheduler's

    idle = params["duration"]
    gc.collect()
    rss_before, began = rss_kib(), time.perf_counter()
    measured: dict[str, float] = {}

    def monitor() -> None:
        time.sleep(SETTLE_SECONDS)
        before = cpu_seconds()
        time.sleep(idle)
        measured["cpu"] = cpu_seconds() - before
        measured["rss"] = rss_kib()

    started_at = run_poller(Path(params["config"]), monitor)
    grown = measured["rss"] - rss_before
    return {
        "schedule_s": started_at - began,
        "rss_mib": grown / 1024,
        "kib_per_job": grown / params["jobs"],
        "idle_cpu_s": measured["cpu"] * 20 / idle,
    }
