"""The real daemon (`python app.py`) in a subprocess, against the stand-in platform."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from poller.run.results import RunResult
from poller.store import SqliteStore
from tests.daemonproc import REPO, DaemonProcess, config_with, launch, tick_job, wait_until
from tests.platform import PlatformServer, slow


def test_fires_on_schedule_without_drift(folder: Path, daemons: list[DaemonProcess]) -> None:
    daemon = launch(daemons, folder, config_with(tick_job("t")))
    runs = daemon.wait_runs("t", 3, status="success", timeout=10)
    planned = sorted(datetime.fromisoformat(r["scheduled_for"]) for r in runs)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(planned)}
    assert gaps == {1.0}
    assert {r["trigger"] for r in runs} == {"schedule"}
    for run in runs:
        lateness = datetime.fromisoformat(run["started_at"]) - datetime.fromisoformat(
            run["scheduled_for"]
        )
        assert lateness < timedelta(seconds=0.5)
    log = daemon.log()
    assert "job t (t): next fire" in log
    assert f"[job=t run={runs[0]['run_id']}]" in log


def test_burst_runs_in_parallel_on_the_pool(
    folder: Path, platform: PlatformServer, daemons: list[DaemonProcess]
) -> None:
    jobs = [
        {"id": f"j{i}", "every": "1h", "run_on_start": True, "integrationIDs": [[f"slow{i}"]]}
        for i in range(16)
    ]
    for i in range(16):
        platform.script(f"slow{i}", slow(1.0))
    launch(daemons, folder, config_with(*jobs, platform=platform, max_workers=8))
    assert platform.wait_for_requests(16, timeout=10)
    arrivals = sorted(r.at for r in platform.requests)
    # 8 workers and 1 s calls: two waves, not sixteen in a row.
    assert arrivals[-1] - arrivals[0] < 2.0
    assert arrivals[7] - arrivals[0] < 0.5


def test_overlapping_fires_are_skipped(folder: Path, daemons: list[DaemonProcess]) -> None:
    job = {
        "id": "slow",
        "every": "1s",
        "input": {"seconds": 2.5},
        "integrationIDs": [[{"function": "steps:nap"}]],
    }
    daemon = launch(daemons, folder, config_with(job))
    skipped = daemon.wait_runs("slow", 2, status="skipped", timeout=10)
    assert all("already running (1 of max_instances 1)" in r["reason"] for r in skipped)


def test_blackout_day_is_recorded_as_skipped(folder: Path, daemons: list[DaemonProcess]) -> None:
    job = tick_job("dark", blackout_days=[0, 1, 2, 3, 4, 5, 6])
    daemon = launch(daemons, folder, config_with(job))
    runs = daemon.wait_runs("dark", 1, status="skipped", timeout=10)
    assert "blackout" in runs[0]["reason"]
    assert runs[0]["steps"] == []


def test_reload_adds_changes_and_removes_jobs(folder: Path, daemons: list[DaemonProcess]) -> None:
    daemon = launch(daemons, folder, config_with(tick_job("a"), tick_job("b"), tick_job("c")))
    daemon.wait_runs("b", 1)
    daemon.write_config(config_with(tick_job("a"), tick_job("c", every="2s"), tick_job("d")))
    log = daemon.wait_log("reloaded", timeout=5)
    assert "added d; changed c; removed b; 1 unchanged" in log
    daemon.wait_runs("d", 2, status="success")
    b_runs = len(daemon.runs("b"))
    daemon.wait_runs("d", 4, status="success")
    assert len(daemon.runs("b")) == b_runs
    assert log.count("reloaded") == 1


@pytest.mark.parametrize(
    "bad",
    ["", '{"jobs": [', '{"jobs": [{"id": "a", "every": "1s"}]}'],
    ids=["empty", "truncated", "invalid"],
)
def test_bad_saves_keep_the_last_good_config(
    folder: Path, daemons: list[DaemonProcess], bad: str
) -> None:
    daemon = launch(daemons, folder, config_with(tick_job("a")))
    daemon.write_config(bad)
    log = daemon.wait_log("keeping the last good config", timeout=5)
    assert "config.json" in log
    before = len(daemon.runs("a", "success"))
    daemon.wait_runs("a", before + 2, status="success")


def test_rename_save_and_sighup_reload(folder: Path, daemons: list[DaemonProcess]) -> None:
    daemon = launch(daemons, folder, config_with(tick_job("a")))
    daemon.replace_config(config_with(tick_job("a"), tick_job("b")))
    daemon.wait_log("added b;", timeout=5)
    daemon.wait_runs("b", 1)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded", count=2, timeout=5)
    assert "added none; changed none; removed none; 2 unchanged" in daemon.log()


def long_run(seconds: float) -> dict[str, Any]:
    """A job that starts with the daemon and naps for `seconds`."""
    return {
        "id": "long",
        "every": "1h",
        "run_on_start": True,
        "input": {"seconds": seconds},
        "integrationIDs": [[{"function": "steps:nap"}]],
    }


def test_sigterm_lets_the_run_finish_and_exits_zero(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    job = long_run(1.5)
    daemon = launch(daemons, folder, config_with(job))
    wait_until(lambda: daemon.runs("long", "running"), what="the run to start")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(15) == 0
    (run,) = daemon.runs("long")
    assert run["status"] == "success"
    assert "Poller stopped" in daemon.log()


def test_sigterm_grace_marks_unfinished_runs_interrupted(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    job = long_run(30)
    daemon = launch(daemons, folder, config_with(job, shutdown_grace_seconds=0.5))
    wait_until(lambda: daemon.runs("long", "running"), what="the run to start")
    began = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(15) == 0
    assert time.monotonic() - began < 5
    (run,) = daemon.runs("long")
    assert run["status"] == "interrupted"


def test_kill_9_then_restart_marks_the_run_interrupted(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    job = long_run(30)
    daemon = launch(daemons, folder, config_with(job))
    wait_until(lambda: daemon.runs("long", "running"), what="the run to start")
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit()
    daemon.write_config(config_with({**job, "run_on_start": False}))
    daemon.start()
    (run,) = daemon.runs("long")
    assert run["status"] == "interrupted"
    assert "run(s) left running by the last daemon are now interrupted" in daemon.log()


@pytest.mark.parametrize(
    ("coalesce", "expected"), [(True, 1), (False, 3)], ids=["coalesce", "each"]
)
def test_catch_up_after_downtime(
    folder: Path, daemons: list[DaemonProcess], coalesce: bool, expected: int
) -> None:
    daemon = launch(daemons, folder, config_with(tick_job("t", coalesce=coalesce)))
    daemon.wait_runs("t", 1, status="success")
    assert daemon.stop() == 0
    stopped_at = datetime.now(UTC)
    time.sleep(3.2)  # the downtime under test: three 1 s fires are missed
    daemon.start()
    catch_up = wait_until(
        lambda: [r for r in daemon.runs("t", "success") if r["trigger"] == "catch-up"],
        what="catch-up runs",
    )
    time.sleep(0.3)  # let a non-coalesced series finish landing
    catch_up = [r for r in daemon.runs("t") if r["trigger"] == "catch-up"]
    assert len(catch_up) in (expected, expected + 1)
    assert all(datetime.fromisoformat(r["scheduled_for"]) > stopped_at for r in catch_up)


def test_fires_beyond_the_grace_are_one_misfire_record(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = launch(daemons, folder, config_with(tick_job("t", misfire_grace_seconds=0.5)))
    daemon.wait_runs("t", 1, status="success")
    daemon.stop()
    time.sleep(2.5)
    daemon.start()
    (misfire,) = wait_until(
        lambda: [r for r in daemon.runs("t", "skipped") if "misfire" in (r["reason"] or "")],
        what="a misfire record",
    )
    assert "fire(s) from" in misfire["reason"]


def test_history_is_pruned(folder: Path, daemons: list[DaemonProcess]) -> None:
    store = SqliteStore(folder / "data" / "poller.db")
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    for i in range(5):
        store.save(
            {
                "run_id": f"old{i}",
                "job_id": "t",
                "trigger": "manual",
                "scheduled_for": None,
                "started_at": old,
                "finished_at": old,
                "status": "success",
                "reason": None,
                "steps": [],
                "output": {},
            }
        )
    store.close()
    daemon = launch(daemons, folder, config_with(tick_job("t"), history_max_runs_per_job=3))
    daemon.wait_log("history: pruned 5 old run(s)")
    daemon.wait_runs("t", 3, status="success")
    assert not [r for r in daemon.runs("t") if r["run_id"].startswith("old")]


def test_a_second_daemon_on_the_same_database_refuses(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    launch(daemons, folder, config_with(tick_job("t", every="1h")))
    second = subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--config", str(folder / "config.json")],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert second.returncode == 1
    assert "is in use by another Poller daemon (pid" in second.stderr


def test_history_command(folder: Path, daemons: list[DaemonProcess]) -> None:
    daemon = launch(daemons, folder, config_with(tick_job("t")))
    daemon.wait_runs("t", 2, status="success")

    def history(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                str(REPO / "app.py"),
                "history",
                *args,
                "--config",
                str(folder / "config.json"),
            ],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ},
        )

    table = history("t", "--limit", "2")
    assert table.returncode == 0
    lines = table.stdout.strip().splitlines()
    assert lines[0].split()[:5] == ["started", "job", "trigger", "status", "duration"]
    assert len(lines) == 3 and all(" t " in line and "success" in line for line in lines[1:])
    records = json.loads(history("--json", "--limit", "2").stdout)
    assert len(records) == 2
    derived = ["alerts_sent", "alert_errors"]  # counted from `alerts`
    assert list(records[0]) == [field.name for field in dataclasses.fields(RunResult)] + derived
    assert records[0]["started_at"] >= records[1]["started_at"]


def test_a_second_sigint_exits_at_once(folder: Path, daemons: list[DaemonProcess]) -> None:
    daemon = launch(daemons, folder, config_with(long_run(30)))
    wait_until(lambda: daemon.runs("long", "running"), what="the run to start")
    began = time.monotonic()
    daemon.signal(signal.SIGINT)
    daemon.wait_log("stopping: no new fires")
    daemon.signal(signal.SIGINT)
    assert daemon.wait_exit(10) == 130
    assert time.monotonic() - began < 5
    daemon.write_config(config_with({**long_run(30), "run_on_start": False}))
    daemon.start()  # the next start marks the abandoned run interrupted
    (run,) = daemon.runs("long")
    assert run["status"] == "interrupted"


def test_jobs_sharing_a_slow_module_all_succeed_on_their_first_fire(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    """Five workers import one module at once: none may see it half imported (issue 15)."""
    (folder / "extfuncs.py").write_text(
        "import time\ntime.sleep(0.3)\n\ndef ok(data, context):\n    return {'ok': True}\n"
    )
    jobs = [
        {"id": f"share-{i}", "every": "1s", "integrationIDs": [[{"function": "extfuncs:ok"}]]}
        for i in range(5)
    ]
    daemon = launch(daemons, folder, config_with(*jobs))
    for job in jobs:
        daemon.wait_runs(job["id"], 1, status="success", timeout=15)
    firsts = [min(daemon.runs(job["id"]), key=lambda r: r["started_at"]) for job in jobs]
    assert [run["status"] for run in firsts] == ["success"] * 5, [r["reason"] for r in firsts]
    assert "has no callable" not in daemon.log()
