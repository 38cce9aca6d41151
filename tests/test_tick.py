"""Daemon.tick with a FakeClock: catch-up one after another, what an edit moves, a store
that cannot be written, and what /health says about each."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from poller.config.load import parse_config
from poller.config.models import Config
from poller.daemon import CLAIM_RETRY_SECONDS, Daemon
from poller.store import Claim, ClaimAnswer, SqliteStore, StoreError
from tests.conftest import FakeClock
from tests.test_scheduling import Recorder, settle

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FullDiskStore(SqliteStore):
    """A real SQLite store whose claims fail while `is_full`, as on a full disk.

    A stand-in for the disk only, so the tick's logic can be driven with a FakeClock;
    tests/test_runcore.py fills a real filesystem under a real daemon.
    """

    is_full = False

    def claim(self, claims: Sequence[Claim]) -> list[ClaimAnswer]:
        if self.is_full:
            raise StoreError(f"{self.path}: claiming fires", "database or disk is full")
        return super().claim(claims)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FullDiskStore]:
    opened = FullDiskStore(tmp_path / "poller.db")
    opened.acquire_daemon_lock()
    yield opened
    opened.close()


def config_of(tmp_path: Path, jobs: list[dict[str, Any]]) -> Config:
    return parse_config(json.dumps({"jobs": jobs}), tmp_path / "config.json", environ={})


def job(**fields: Any) -> dict[str, Any]:
    return {"id": "j", "every": "10s", "integrationIDs": [["a"]], **fields}


def start(
    tmp_path: Path, store: SqliteStore, clock: FakeClock, jobs: list[dict[str, Any]], **kw: Any
) -> Daemon:
    daemon = Daemon(config_of(tmp_path, jobs), store, clock, **kw)
    daemon.start()
    return daemon


def test_missed_fires_of_a_job_that_does_not_coalesce_run_one_after_another(
    tmp_path: Path, store: FullDiskStore, fake_clock: FakeClock
) -> None:
    fake_clock.set(T0)
    first = start(
        tmp_path, store, fake_clock, [job(every="1s", coalesce=False)], run_chain=Recorder()
    )
    fake_clock.set(T0 + timedelta(seconds=1))
    first.tick(fake_clock.now())
    settle(first)
    first.stop(1)
    fake_clock.set(T0 + timedelta(seconds=11.5))  # down for ten fires
    runner = Recorder(seconds=0.01)
    daemon = start(tmp_path, store, fake_clock, [job(every="1s", coalesce=False)], run_chain=runner)
    now = fake_clock.now()
    for _ in range(40):  # each finished run lets the next waiting fire start
        daemon.tick(now)
        settle(daemon)
    fires = [T0 + timedelta(seconds=s) for s in range(2, 12)]
    assert [call[2] for call in runner.calls] == fires
    assert {call[1] for call in runner.calls} == {"catch-up"}
    records = store.recent("j", limit=100)
    assert sorted(r["scheduled_for"] for r in records) == [
        f.isoformat() for f in [T0 + timedelta(seconds=1), *fires]
    ]
    assert {r["status"] for r in records} == {"success"}


GRID_EDITS = {
    "every": {"every": "7s"},
    "timezone": {"timezone": "Asia/Tokyo"},
}
OTHER_EDITS = {
    "label": {"label": "Renamed"},
    "description": {"description": "what it does"},
    "chain": {"integrationIDs": [["a"], ["b"]]},
    "input": {"input": {"page": 2}},
    "blackout_days": {"blackout_days": ["sun"]},
    "coalesce": {"coalesce": False},
    "misfire_grace_seconds": {"misfire_grace_seconds": 5},
    "max_instances": {"max_instances": 3},
}


@pytest.mark.parametrize("edit", list(OTHER_EDITS.values()), ids=list(OTHER_EDITS))
def test_an_edit_off_the_grid_keeps_the_next_fire_and_anchor(
    tmp_path: Path, store: FullDiskStore, fake_clock: FakeClock, edit: dict[str, Any]
) -> None:
    fake_clock.set(T0)
    daemon = start(tmp_path, store, fake_clock, [job()])
    fake_clock.advance(4)
    daemon.apply(config_of(tmp_path, [job(**edit)]))
    assert daemon.scheduler.by_id["j"].next_run == T0 + timedelta(seconds=10)
    assert store.job_states()["j"].anchor == T0
    assert daemon._planned["j"].job.model_dump(exclude_unset=True).items() >= edit.items()


@pytest.mark.parametrize("edit", list(GRID_EDITS.values()), ids=list(GRID_EDITS))
def test_an_edit_of_the_grid_anchors_the_job_anew(
    tmp_path: Path, store: FullDiskStore, fake_clock: FakeClock, edit: dict[str, Any]
) -> None:
    fake_clock.set(T0)
    daemon = start(tmp_path, store, fake_clock, [job()])
    grid = store.job_states()["j"].grid
    fake_clock.advance(4)
    daemon.apply(config_of(tmp_path, [job(**edit)]))
    state = store.job_states()["j"]
    assert state.anchor == T0 + timedelta(seconds=4) and state.grid != grid
    step = 7 if "every" in edit else 10
    assert daemon.scheduler.by_id["j"].next_run == T0 + timedelta(seconds=4 + step)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"time": "08:00"}, {"time": "09:00"}),
        ({"cron": "0 * * * *"}, {"cron": "5 * * * *"}),
        ({"time": "08:00"}, {"time": "08:00", "days": ["mon"]}),
    ],
    ids=["time", "cron", "days"],
)
def test_time_cron_and_days_are_part_of_the_grid(
    tmp_path: Path,
    store: FullDiskStore,
    fake_clock: FakeClock,
    before: dict[str, Any],
    after: dict[str, Any],
) -> None:
    fake_clock.set(T0)
    daemon = start(tmp_path, store, fake_clock, [job(every=None, **before)])
    grid = store.job_states()["j"].grid
    daemon.apply(config_of(tmp_path, [job(every=None, **after, label="same grid?")]))
    assert store.job_states()["j"].grid != grid


def test_a_resumed_job_fires_at_its_next_slot_without_catching_up(
    tmp_path: Path, store: FullDiskStore, fake_clock: FakeClock
) -> None:
    fake_clock.set(T0)
    runner = Recorder()
    daemon = start(tmp_path, store, fake_clock, [job()], run_chain=runner)
    fake_clock.advance(3)
    daemon.apply(config_of(tmp_path, [job(enabled=False)]))
    assert "j" not in daemon.scheduler.by_id
    fake_clock.advance(22)  # paused over the fires at :10 and :20
    daemon.apply(config_of(tmp_path, [job()]))
    assert daemon.scheduler.by_id["j"].next_run == T0 + timedelta(seconds=30)  # same grid
    daemon.tick(fake_clock.now())
    settle(daemon)
    assert runner.calls == [] and store.recent("j") == []


def test_a_store_that_cannot_claim_runs_nothing_then_recovers(
    tmp_path: Path, store: FullDiskStore, fake_clock: FakeClock
) -> None:
    fake_clock.set(T0)
    runner, reports = Recorder(), []
    daemon = start(
        tmp_path,
        store,
        fake_clock,
        [job(every="1s", misfire_grace_seconds=30)],
        run_chain=runner,
        report=reports.append,
    )
    store.is_full = True
    for second in range(1, 6):
        fake_clock.set(T0 + timedelta(seconds=second))
        assert daemon.tick(fake_clock.now()) == CLAIM_RETRY_SECONDS
    settle(daemon)
    assert runner.calls == [] and store.recent("j") == []
    state, reason = daemon.health(fake_clock.now())
    assert state == "unhealthy" and reason is not None
    assert "cannot be written since 2026-03-01T12:00:01+00:00" in reason
    assert "disk is full" in reason
    assert len(reports) == 1 and "1 job(s) have fires pending" in reports[0]
    fake_clock.set(T0 + timedelta(seconds=61))
    daemon.tick(fake_clock.now())
    assert len(reports) == 2  # one line a minute
    store.is_full = False
    fake_clock.set(T0 + timedelta(seconds=62))
    daemon.tick(fake_clock.now())
    settle(daemon)
    assert daemon.health(fake_clock.now()) == ("healthy", None)
    # Fires more than 30 s late are one misfire record; the rest coalesce into one run.
    records = {r["status"]: r for r in store.recent("j")}
    assert records["skipped"]["reason"].startswith("misfire, more than 30s late: 31 fire(s)")
    assert [call[1] for call in runner.calls] == ["catch-up"]
    assert runner.calls[0][2] == T0 + timedelta(seconds=62)


def test_health_says_stopping_during_a_graceful_stop(
    tmp_path: Path, store: FullDiskStore, fake_clock: FakeClock
) -> None:
    daemon = start(tmp_path, store, fake_clock, [job()])
    assert daemon.health(fake_clock.now()) == ("healthy", None)
    daemon.stop(0)
    assert daemon.health(fake_clock.now())[0] == "stopping"


def test_a_replaced_client_pool_is_closed_once_its_last_run_ends(
    tmp_path: Path, store: FullDiskStore, fake_clock: FakeClock
) -> None:
    def with_environment(url: str) -> Config:
        text = json.dumps({"environments": {"live": {"base_url": url}}, "jobs": [job(every="1s")]})
        return parse_config(text, tmp_path / "config.json", environ={})

    fake_clock.set(T0)
    daemon = Daemon(
        with_environment("http://127.0.0.1:1"), store, fake_clock, run_chain=Recorder(0.3)
    )
    daemon.start()
    old = daemon.clients
    fake_clock.set(T0 + timedelta(seconds=1))
    daemon.tick(fake_clock.now())  # a run starts with the old pool
    daemon.apply(with_environment("http://127.0.0.1:2"))
    assert daemon.clients is not old and not old.is_closed  # still in use
    settle(daemon)
    assert old.is_closed
    newer = daemon.clients
    daemon.apply(with_environment("http://127.0.0.1:3"))  # unused: closed at once
    assert newer.is_closed


def test_a_downtime_of_more_fires_than_are_counted_stays_on_the_grid(
    tmp_path: Path, store: FullDiskStore, fake_clock: FakeClock
) -> None:
    fake_clock.set(T0)
    first = start(tmp_path, store, fake_clock, [job(every="1s")], run_chain=Recorder())
    fake_clock.set(T0 + timedelta(seconds=1))
    first.tick(fake_clock.now())
    settle(first)
    first.stop(1)
    fake_clock.set(T0 + timedelta(seconds=20_000.5))  # 20,000 fires missed: over the scan limit
    runner = Recorder()
    daemon = start(tmp_path, store, fake_clock, [job(every="1s")], run_chain=runner)
    daemon.tick(fake_clock.now())
    settle(daemon)
    daemon.stop(1)
    records = {r["reason"] or r["status"]: r for r in store.recent("j", limit=10)}
    misfire = next(r for reason, r in records.items() if reason.startswith("misfire"))
    assert "more than 10000 fire(s) from 2026-03-01T12:00:02+00:00 to " in misfire["reason"]
    assert misfire["scheduled_for"] == (T0 + timedelta(seconds=20_000 - 300)).isoformat()
    assert [call[2] for call in runner.calls] == [T0 + timedelta(seconds=20_000)]  # on the grid


def test_a_grace_of_zero_still_runs_fires_handed_off_on_time(
    tmp_path: Path, store: FullDiskStore, fake_clock: FakeClock
) -> None:
    """A wake is a few milliseconds late: with `misfire_grace_seconds: 0` every fire was a
    misfire and the job never ran."""
    fake_clock.set(T0)
    runner = Recorder()
    daemon = start(
        tmp_path, store, fake_clock, [job(every="2s", misfire_grace_seconds=0)], run_chain=runner
    )
    for second in (2, 4):
        fake_clock.set(T0 + timedelta(seconds=second, milliseconds=3))
        daemon.tick(fake_clock.now())
        settle(daemon)  # the first run has ended before the second fire
    assert [call[1] for call in runner.calls] == ["schedule", "schedule"]
    assert [r["status"] for r in store.recent("j") if r["status"] == "skipped"] == []
