"""The scheduler and Daemon.tick with a FakeClock: no drift, DST, catch-up, misfires, reload."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from poller.config.load import parse_config
from poller.config.models import Config, Job
from poller.daemon import Daemon
from poller.plans import grid_of
from poller.run.results import RunResult, started_result
from poller.scheduling import FireJob, HeapScheduler
from poller.store import Claim, JobState, SqliteStore
from poller.timing import fires_between, next_fire
from tests.conftest import FakeClock
from tests.daemonproc import wait_until

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def loop(scheduler: HeapScheduler, clock: FakeClock, until: datetime) -> None:
    """The bare scheduler, as schedule's docs drive it: run what is due, sleep till next."""
    while clock.now() < until:
        scheduler.run_pending()
        idle = scheduler.idle_seconds
        left = (until - clock.now()).total_seconds()
        clock.wait(min(idle if idle is not None else 30.0, 30.0, left))


def test_fires_come_from_the_plan_in_due_order(fake_clock: FakeClock) -> None:
    scheduler = HeapScheduler(fake_clock)
    fired: list[tuple[str, datetime]] = []

    def fire(job: FireJob) -> None:
        fired.append((job.job_id, job.next_run))
        fake_clock.advance(0.7)  # a slow hand-off must not shift the next fire

    for name, seconds in (("a", 3), ("b", 2), ("c", 5)):

        def plan(after: datetime, step: int = seconds) -> datetime:
            return after + timedelta(seconds=step)

        scheduler.add(name, plan, plan(T0), fire)
    fake_clock.set(T0)
    loop(scheduler, fake_clock, T0 + timedelta(seconds=10))
    assert [f[1] for f in fired] == sorted(f[1] for f in fired)
    for name, seconds in (("a", 3), ("b", 2), ("c", 5)):
        times = [at for job, at in fired if job == name]
        assert times == [T0 + timedelta(seconds=seconds * k) for k in range(1, len(times) + 1)]
    assert len(scheduler.get_jobs()) == 3


def test_cancelled_and_replaced_jobs_do_not_fire(fake_clock: FakeClock) -> None:
    scheduler = HeapScheduler(fake_clock)
    fired: list[str] = []

    def plan(after: datetime) -> datetime:
        return after + timedelta(seconds=1)

    gone = scheduler.add("gone", plan, T0 + timedelta(seconds=1), lambda j: fired.append("gone"))
    scheduler.add("moved", plan, T0 + timedelta(seconds=1), lambda j: fired.append("old"))
    scheduler.add("moved", plan, T0 + timedelta(seconds=3), lambda j: fired.append("new"))
    scheduler.cancel_job(gone)
    fake_clock.set(T0)
    loop(scheduler, fake_clock, T0 + timedelta(seconds=3.5))
    assert fired == ["new"]
    assert scheduler.next_due() == T0 + timedelta(seconds=4)


@pytest.fixture
def london_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/London")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    "fields",
    [{"time": "01:30"}, {"every": "30m"}, {"cron": "*/20 1 * * *"}, {"time": ["00:59", "02:00"]}],
    ids=["time-in-gap", "every-30m", "cron-in-gap", "times-around-gap"],
)
@pytest.mark.parametrize(
    "start",
    [datetime(2026, 3, 28, 22, tzinfo=UTC), datetime(2026, 10, 24, 22, tzinfo=UTC)],
    ids=["spring", "autumn"],
)
def test_loop_across_dst_fires_when_timing_says(
    london_process: None, fake_clock: FakeClock, fields: dict[str, Any], start: datetime
) -> None:
    job = Job.model_validate({"id": "j", "integrationIDs": [["a"]], **fields})
    schedule = job.schedule("Europe/London")
    scheduler = HeapScheduler(fake_clock)
    fired: list[datetime] = []
    fake_clock.set(start)

    def plan(after: datetime) -> datetime:
        return next_fire(schedule, after, start)

    scheduler.add("j", plan, plan(start), lambda j: fired.append(j.next_run))
    end = start + timedelta(hours=30)
    loop(scheduler, fake_clock, end)
    assert fired == [f for f in fires_between(schedule, start, end, start) if f < end]
    assert fired, "the window must contain fires"


def write_config(tmp_path: Path, jobs: list[dict[str, Any]]) -> Config:
    import json

    return parse_config(json.dumps({"jobs": jobs}), tmp_path / "config.json", environ={})


class Recorder:
    """A chain runner for the daemon that records what it was asked to run."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.calls: list[tuple[str, str, datetime | None]] = []
        self.seconds = seconds

    def __call__(self, job: Job, config: Config, clients: object, **kw: Any) -> RunResult:
        self.calls.append((job.id, kw["trigger"], kw["scheduled_for"]))
        time.sleep(self.seconds)
        now = datetime.now(UTC)
        return RunResult(
            kw["run_id"], job.id, kw["trigger"], kw["scheduled_for"], now, now, "success"
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "poller.db")
    opened.acquire_daemon_lock()
    yield opened
    opened.close()


def drive(daemon: Daemon, clock: FakeClock, until: datetime) -> None:
    """Tick the daemon as app.py's loop does, the fake clock jumping to each next wake."""
    while clock.now() < until:
        wait = daemon.tick(clock.now())
        clock.wait(min(wait, (until - clock.now()).total_seconds()))


def make_daemon(
    tmp_path: Path,
    store: SqliteStore,
    clock: FakeClock,
    jobs: list[dict[str, Any]],
    runner: Recorder,
) -> Daemon:
    daemon = Daemon(write_config(tmp_path, jobs), store, clock, run_chain=runner)
    daemon.start()
    return daemon


def settle(daemon: Daemon) -> None:
    wait_until(lambda: daemon.inflight() == 0, timeout=5, what="runs to finish")
    daemon.store.flush()


def every_second(**fields: Any) -> dict[str, Any]:
    return {"id": "t", "every": "1s", "integrationIDs": [["a"]], **fields}


def test_catch_up_after_downtime_coalesces(
    tmp_path: Path, store: SqliteStore, fake_clock: FakeClock
) -> None:
    fake_clock.set(T0)
    runner = Recorder()
    job = every_second(max_instances=10)
    daemon = make_daemon(tmp_path, store, fake_clock, [job], runner)
    drive(daemon, fake_clock, T0 + timedelta(seconds=3.5))
    settle(daemon)
    daemon.stop(1)
    assert [c[1] for c in runner.calls] == ["schedule"] * 3
    fake_clock.advance(60)  # down for a minute
    runner2 = Recorder()
    daemon2 = make_daemon(tmp_path, store, fake_clock, [job], runner2)
    daemon2.tick(fake_clock.now())
    settle(daemon2)
    (call,) = runner2.calls
    assert call[1] == "catch-up"
    assert call[2] == fake_clock.now().replace(microsecond=0)  # the latest missed fire
    assert daemon2.scheduler.next_due() == call[2] + timedelta(seconds=1)  # type: ignore[operator]


def test_catch_up_each_is_capped_at_100(
    tmp_path: Path, store: SqliteStore, fake_clock: FakeClock
) -> None:
    fake_clock.set(T0)
    job = every_second(coalesce=False, max_instances=200)
    daemon = make_daemon(tmp_path, store, fake_clock, [job], Recorder())
    drive(daemon, fake_clock, T0 + timedelta(seconds=1.5))
    settle(daemon)
    daemon.stop(1)
    fake_clock.advance(250)
    runner = Recorder()
    daemon2 = make_daemon(tmp_path, store, fake_clock, [job], runner)
    daemon2.tick(fake_clock.now())
    settle(daemon2)
    assert len(runner.calls) == 100
    assert {c[1] for c in runner.calls} == {"catch-up"}


def test_fires_beyond_grace_become_one_misfire(
    tmp_path: Path, store: SqliteStore, fake_clock: FakeClock
) -> None:
    fake_clock.set(T0)
    runner = Recorder()
    daemon = make_daemon(
        tmp_path, store, fake_clock, [every_second(misfire_grace_seconds=10)], runner
    )
    drive(daemon, fake_clock, T0 + timedelta(seconds=1.5))
    settle(daemon)
    fake_clock.advance(3600)  # a suspend: the loop wakes an hour late
    daemon.tick(fake_clock.now())
    settle(daemon)
    coalesced, misfire = store.recent("t", status="skipped")
    assert misfire["reason"].startswith("misfire, more than 10s late: 3590 fire(s) from")
    # The 10 fires within the grace ran once; the 9 not run have one record too.
    assert coalesced["reason"].startswith("coalesced with the fire at 2026-03-01T13:00:01")
    assert ": 9 fire(s) from" in coalesced["reason"]
    assert runner.calls[-1][1] == "catch-up"
    assert len(runner.calls) == 2


def test_full_job_records_a_skip(tmp_path: Path, store: SqliteStore, fake_clock: FakeClock) -> None:
    fake_clock.set(T0)
    runner = Recorder(seconds=0.5)
    daemon = make_daemon(tmp_path, store, fake_clock, [every_second()], runner)
    drive(daemon, fake_clock, T0 + timedelta(seconds=2.5))
    settle(daemon)
    (skip,) = store.recent("t", status="skipped")
    assert skip["reason"] == "already running (1 of max_instances 1)"


def test_a_fire_runs_once_even_if_planned_twice(
    tmp_path: Path, store: SqliteStore, fake_clock: FakeClock
) -> None:
    fake_clock.set(T0)
    runner = Recorder()
    daemon = make_daemon(tmp_path, store, fake_clock, [every_second(max_instances=5)], runner)
    at = T0 + timedelta(seconds=1)
    # Another daemon (or an earlier life of this one) claimed the fire first.
    started = started_result("t", trigger="schedule", started_at=at, scheduled_for=at)
    assert store.claim([Claim("t", at, started)]) == ["claimed"]
    fake_clock.set(at)
    daemon.tick(at)
    settle(daemon)
    assert runner.calls == []
    assert store.mark_interrupted("the other daemon died", at) == 1  # its claim, alone


def test_reload_keeps_unchanged_jobs(
    tmp_path: Path, store: SqliteStore, fake_clock: FakeClock
) -> None:
    fake_clock.set(T0)
    jobs = [
        {"id": "keep", "every": "10s", "integrationIDs": [["a"]]},
        {"id": "change", "every": "10s", "integrationIDs": [["a"]]},
        {"id": "drop", "every": "10s", "integrationIDs": [["a"]]},
    ]
    daemon = make_daemon(tmp_path, store, fake_clock, jobs, Recorder())
    keep_due = daemon.scheduler.by_id["keep"].next_run
    fake_clock.advance(3)
    new_jobs = [
        jobs[0],
        {**jobs[1], "every": "20s"},
        {"id": "new", "every": "5s", "integrationIDs": [["a"]]},
    ]
    summary = daemon.apply(write_config(tmp_path, new_jobs))
    assert str(summary) == "added new; changed change; removed drop; 1 unchanged"
    assert daemon.scheduler.by_id["keep"].next_run == keep_due
    assert daemon.scheduler.by_id["change"].next_run == T0 + timedelta(seconds=23)
    assert daemon.scheduler.by_id["new"].next_run == T0 + timedelta(seconds=8)
    assert "drop" not in daemon.scheduler.by_id


class LateReader(SqliteStore):
    """Reads the job states as a daemon of a shared store may: before another daemon
    saved its anchor (it is already stored when this one saves its own)."""

    def job_states(self) -> dict[str, JobState]:
        return {}


def test_a_daemon_takes_the_anchor_another_daemon_stored_first(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    job = {"id": "t", "every": "5s", "integrationIDs": [["a"]]}
    config = write_config(tmp_path, [job])
    store = LateReader(tmp_path / "poller.db")
    store.acquire_daemon_lock()
    try:
        earlier = T0 - timedelta(seconds=3)  # the other daemon started 3 s before
        store.save_job_states({"t": JobState(grid_of(config, config.jobs[0]), earlier, None)})
        fake_clock.set(T0)
        daemon = Daemon(config, store, fake_clock, run_chain=Recorder())
        daemon.start()
        # On the other daemon's grid (earlier + 5 s), not on one of its own (T0 + 5 s).
        assert daemon.scheduler.by_id["t"].next_run == earlier + timedelta(seconds=5)
    finally:
        store.close()
