"""The run core against the real daemon: a fire is claimed (its first record committed) before
it runs, so a `kill -9` mid catch-up, a full disk under the state database, a SIGTERM during a
retry backoff and a storm of SIGHUPs each leave every fire recorded once and run at most once.

Steps count their own calls in a file beside the config (`probe:note` appends the job, fire
and run id it was called for), so a call that happened without its claim shows up.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.apiproc import api_settings, start_api_daemon
from tests.daemonproc import DaemonProcess, config_with, launch, tick_job, tmpfs, wait_until
from tests.platform import PlatformServer, always

PROBE = """  # probe.py of a test config folder: each call appends its job, fire and run
import time
from pathlib import Path

CALLS = Path(__file__).with_name("calls.txt")

def note(data, context):
    fire = context.scheduled_for.isoformat() if context.scheduled_for else "-"
    with CALLS.open("a") as calls:
        calls.write(f"{context.job_id} {fire} {context.run_id}\\n")
    time.sleep(float(data.get("seconds", 0)))
    return {"noted": fire}
"""
RAN = {"success", "failed", "interrupted"}
"""Statuses of a record whose chain was started (an interrupted one may have been cut short)."""
SERIES = re.compile(r": (\d+) fire\(s\) from (\S+) to (\S+)$")
"""The end of a skipped record's reason that stands for a series of fires."""


class Call(NamedTuple):
    """One call of `probe:note`: the fire it ran for."""

    job_id: str
    fire: datetime
    run_id: str


def probe_job(job_id: str, every: str, seconds: float = 0.0, **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "every": every,
        "input": {"seconds": seconds},
        "integrationIDs": [[{"function": "probe:note"}]],
        **fields,
    }


def add_probe(folder: Path) -> None:
    (folder / "probe.py").write_text(PROBE)


def calls(folder: Path) -> list[Call]:
    """Every call of `probe:note` so far, in order."""
    path = folder / "calls.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        Call(job, datetime.fromisoformat(fire), run) for job, fire, run in map(str.split, lines)
    ]


def fires(records: list[dict[str, Any]]) -> list[datetime]:
    """The scheduled instants of the schedule and catch-up records, sorted."""
    return sorted(
        datetime.fromisoformat(r["scheduled_for"])
        for r in records
        if r["trigger"] in ("schedule", "catch-up")
    )


def covered(record: dict[str, Any], step: timedelta) -> list[datetime]:
    """The fires a record stands for: one, or the series a skip names (misfires)."""
    match = SERIES.search(record["reason"] or "") if record["status"] == "skipped" else None
    if match is None:
        return [datetime.fromisoformat(record["scheduled_for"])]
    count, first, last = int(match[1]), *map(datetime.fromisoformat, match.group(2, 3))
    assert first + (count - 1) * step == last == datetime.fromisoformat(record["scheduled_for"])
    return [first + n * step for n in range(count)]


def assert_each_fire_once(records: list[dict[str, Any]], step: timedelta) -> None:
    """One record per fire, and no fire without one between the first and the last."""
    scheduled = [r for r in records if r["trigger"] in ("schedule", "catch-up")]
    instants = sorted(fire for r in scheduled for fire in covered(r, step))
    twice = {fire: n for fire, n in Counter(instants).items() if n > 1}
    assert not twice, f"fires with more than one record: {twice}"
    gaps = [(a, b) for a, b in itertools.pairwise(instants) if b - a != step]
    assert not gaps, f"fires without a record between: {gaps[:5]}"


def assert_calls_were_claimed(called: list[Call], records: list[dict[str, Any]]) -> None:
    """Each call belongs to a record of its fire that says it ran; no fire ran twice."""
    twice = {f: n for f, n in Counter((c.job_id, c.fire) for c in called).items() if n > 1}
    assert not twice, f"fires whose step ran more than once: {twice}"
    ran = {
        r["run_id"]: (r["job_id"], datetime.fromisoformat(r["scheduled_for"]))
        for r in records
        if r["status"] in RAN
    }
    unclaimed = [c for c in called if ran.get(c.run_id) != (c.job_id, c.fire)]
    assert not unclaimed, f"step calls without a record that ran: {unclaimed[:5]}"
    assert len(called) <= len(ran)


def test_kill_9_mid_catch_up_runs_each_missed_fire_once(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    add_probe(folder)
    # Real downtime, not edited state: 0.1 s fires and 4 s down give ~45 missed fires,
    # run one at a time, 20 ms each (so one is always running or its end still queued).
    job = probe_job("c", "0.1s", seconds=0.02, coalesce=False, max_instances=1)
    daemon = launch(daemons, folder, config_with(job))
    daemon.wait_runs("c", 5, status="success")
    assert daemon.stop() == 0
    time.sleep(4)  # the downtime under test
    daemon.start()
    wait_until(
        lambda: sum(r["trigger"] == "catch-up" for r in daemon.runs("c")) >= 12,
        what="a dozen catch-up runs",
    )
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit()
    killed = datetime.now(UTC)
    # The kill came mid catch-up: fires well before it were still unclaimed.
    assert fires(daemon.runs("c"))[-1] < killed - timedelta(seconds=1)
    daemon.start()
    again = datetime.now(UTC)
    # Caught up once a fire after the restart runs on time (one behind a backlog is catch-up).
    wait_until(
        lambda: any(
            r["trigger"] == "schedule"
            and r["status"] == "success"
            and datetime.fromisoformat(r["scheduled_for"]) > again
            for r in daemon.runs("c")
        ),
        timeout=20,
        what="on-time fires after the resumed catch-up",
    )
    assert daemon.stop() == 0
    records, called = daemon.runs("c"), calls(folder)
    assert [r for r in records if r["status"] == "running"] == []
    assert any(r["status"] == "interrupted" for r in records), "the kill cut no run short"
    assert any(
        r["trigger"] == "catch-up" and datetime.fromisoformat(r["started_at"]) > again
        for r in records
    ), "the second start did not go on with the catch-up"
    assert sum(r["trigger"] == "catch-up" for r in records) >= 30
    assert_each_fire_once(records, timedelta(milliseconds=100))
    assert_calls_were_claimed(called, records)
    # And no record claims a success whose step never ran.
    assert {r["run_id"] for r in records if r["status"] == "success"} <= {c.run_id for c in called}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An empty 1 MiB tmpfs."""
    with tmpfs(tmp_path / "disk", "size=1m") as disk:
        yield disk


def fill(path: Path) -> None:
    """Write `path` until its file system has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (64 * 1024, 4096, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def test_a_full_disk_runs_nothing_unclaimed_and_recovers(
    tmp_path: Path, small_disk: Path, daemons: list[DaemonProcess]
) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    add_probe(folder)
    db = small_disk / "poller.db"
    # d may run 300 s late, so each fire that falls due while full runs later; g only 1 s
    # late, so most of its fires in that time become misfire records.
    jobs = [
        probe_job("d", "1s", coalesce=False),
        probe_job("g", "1s", coalesce=False, misfire_grace_seconds=1),
    ]
    config = {"settings": {"state_db": str(db), "api": api_settings()}, "jobs": jobs}
    api = start_api_daemon(folder, config)
    daemon = api.daemon
    daemons.append(daemon)
    daemon.db_path = db
    daemon.wait_runs("d", 2, status="success")
    assert api.get("/health").status_code == 200

    filler = small_disk / "filler"
    fill(filler)
    health = wait_until(
        lambda: (answer := api.get("/health")).status_code == 503 and answer.json(),
        what="/health to say unhealthy",
    )
    assert health["status"] == "unhealthy"
    assert "state database cannot be written" in health["reason"], health
    report = "poller: the state database cannot be written"
    wait_until(lambda: report in daemon.stderr(), what="the failure on stderr")
    # Three fires fall due while the disk is full. /health naming the same failure
    # throughout means no claim was committed meanwhile, so no step may be called.
    before = calls(folder)
    time.sleep(3)
    still = api.get("/health")
    assert (still.status_code, still.json()["reason"]) == (503, health["reason"])
    called = calls(folder)  # before the records: a claim is committed before its call
    assert called == before, "steps ran while no claim could be written"
    assert_calls_were_claimed(called, daemon.runs())
    assert daemon.stderr().count(report) == 1, "more than one line a minute"
    assert "state database cannot be written" in daemon.log()

    filler.unlink()
    healed = datetime.now(UTC)
    answer = wait_until(
        lambda: (answer := api.get("/health")).status_code == 200 and answer.json(),
        timeout=20,
        what="/health to say healthy again",
    )
    assert answer["status"] == "healthy"
    wait_until(
        lambda: {c.job_id for c in calls(folder) if c.fire > healed} == {"d", "g"},
        what="fires run after recovery",
    )
    assert daemon.stop() == 0
    # The fires that fell due while full ran late (d), or were skipped as misfires (g).
    d, g = daemon.runs("d"), daemon.runs("g")
    assert {r["status"] for r in d} == {"success"}
    assert sum(r["trigger"] == "catch-up" for r in d) >= 3
    assert [r["reason"].split(":")[0] for r in g if r["status"] == "skipped"] == [
        "misfire, more than 1s late"
    ]
    for records in (d, g):
        assert_each_fire_once(records, timedelta(seconds=1))
    assert_calls_were_claimed(calls(folder), d + g)


def test_sigterm_ends_a_retry_backoff_at_once(
    folder: Path, platform: PlatformServer, daemons: list[DaemonProcess]
) -> None:
    platform.script("broken", always(500))
    config = {
        "environments": {"live": {"base_url": platform.url, "retries": 3, "backoff_seconds": 30}},
        "jobs": [{"id": "b", "every": "1h", "run_on_start": True, "integrationIDs": [["broken"]]}],
    }
    daemon = launch(daemons, folder, config)
    daemon.wait_log("attempt 1 failed")
    # A reload does not cut the backoff short: no second attempt follows it.
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("] reloaded ")
    time.sleep(0.5)  # time enough for a retry that the reload would have set off
    assert len(platform.calls("broken")) == 1
    began = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=10) == 0
    assert time.monotonic() - began < 2
    (run,) = daemon.runs("b")
    assert run["status"] == "interrupted", run
    assert run["reason"].startswith("stopped during retry backoff"), run
    (warning,) = [line for line in daemon.log().splitlines() if "attempt 1 failed" in line]
    assert f"[job=b run={run['run_id']}]" in warning


def test_a_sighup_storm_loses_no_fire(folder: Path, daemons: list[DaemonProcess]) -> None:
    daemon = launch(daemons, folder, config_with(tick_job("h", every="1s")))
    daemon.wait_runs("h", 1, status="success")
    assert daemon.proc is not None
    storm_began, began = datetime.now(UTC), time.monotonic()
    for n in range(200):  # one every 10 ms for 2 s
        os.kill(daemon.proc.pid, signal.SIGHUP)
        time.sleep(max(0.0, began + (n + 1) * 0.01 - time.monotonic()))
    storm_ended = datetime.now(UTC)
    daemon.wait_log("] reloaded ", timeout=15)
    wait_until(
        lambda: fires(daemon.runs("h"))[-1] > storm_ended + timedelta(seconds=3),
        what="three fires after the storm",
    )
    assert daemon.proc.poll() is None
    records = daemon.runs("h")
    assert [r for r in records if r["status"] == "skipped"] == []
    assert {r["trigger"] for r in records} == {"schedule"}, "a fire ran late or coalesced"
    instants = fires(records)
    assert instants[0] < storm_began
    assert {b - a for a, b in itertools.pairwise(instants)} == {timedelta(seconds=1)}
