"""The SQLite run history: one run per fire, interrupted runs, pruning, unreadable rows."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from poller.history import DatabaseLockedError, HistoryStore, JobState, _row
from poller.results import started_result

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    history = HistoryStore(tmp_path / "state" / "poller.db")
    yield history
    history.close()


def record(run_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "job_id": "j",
        "trigger": "schedule",
        "scheduled_for": at.isoformat(),
        "started_at": at.isoformat(),
        "finished_at": None,
        "status": "running",
        "reason": None,
        "steps": [],
        "output": None,
        **fields,
    }


def test_database_is_wal(store: HistoryStore) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)


def test_a_fire_is_claimed_once(store: HistoryStore) -> None:
    store.save_job_states([("j", "abc", T0)])
    assert store.claim_fire("j", T0)
    assert not store.claim_fire("j", T0)
    # The same instant written with another offset is the same fire; an earlier one is past.
    assert not store.claim_fire("j", T0.astimezone(ZoneInfo("Asia/Kolkata")))
    assert not store.claim_fire("j", T0 - timedelta(seconds=1))
    assert store.claim_fire("j", T0 + timedelta(seconds=1))
    # A record of the same fire twice is refused by the database itself.
    store.save(record("r1", T0))
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _row(record("r2", T0))
        )


def test_save_later_writes_a_run_once_in_its_newest_state(store: HistoryStore) -> None:
    running = started_result("j", trigger="schedule", started_at=T0, scheduled_for=T0)
    store.save_later(running)
    assert store.get(running.run_id) == running.to_dict()  # seen before it is written
    done = dataclasses.replace(running, status="success", finished_at=T0 + timedelta(seconds=1))
    store.save_later(done)
    store.flush()
    assert store.queued(running.run_id) is None
    assert store.recent("j") == [done.to_dict()]
    assert store.totals() == {"success": 1}


def test_a_claimed_fire_without_its_record_is_recorded_interrupted(store: HistoryStore) -> None:
    store.save_job_states([("j", "abc", T0), ("k", "abc", T0)])
    store.claim_fire("j", T0)  # then the process died before the writer ran
    store.claim_fire("k", T0)
    store.save(record("k1", T0, status="success", job_id="k"))
    assert store.mark_lost_fires(T0 + timedelta(minutes=1)) == 1
    [lost] = store.recent("j")
    assert lost["status"] == "interrupted" and lost["scheduled_for"] == T0.isoformat()
    assert "before the run's record was written" in lost["reason"]
    assert store.mark_lost_fires(T0 + timedelta(minutes=2)) == 0


def test_mark_interrupted(store: HistoryStore) -> None:
    store.save(record("r1", T0))
    store.save(record("r2", T0 + timedelta(seconds=1), status="success"))
    assert store.mark_interrupted("stopped", T0 + timedelta(minutes=1)) == 1
    run = store.get("r1")
    assert run is not None and run["status"] == "interrupted" and run["reason"] == "stopped"
    assert store.totals() == {"interrupted": 1, "success": 1}


def test_prune_by_age_and_count(store: HistoryStore) -> None:
    for i in range(10):
        store.save(record(f"r{i}", T0 + timedelta(minutes=i), status="success"))
    store.save(record("old", T0 - timedelta(days=40), status="success"))
    assert store.prune(max_age_days=30, max_runs_per_job=4, now=T0 + timedelta(hours=1)) == 7
    assert [r["run_id"] for r in store.recent("j")] == ["r9", "r8", "r7", "r6"]


def test_unreadable_rows_are_reported_never_deleted(
    store: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.save(record("good", T0, status="success"))
    db = sqlite3.connect(store.path)
    db.execute(
        "INSERT INTO runs VALUES ('bad', 'j', 'manual', NULL, ?, 'success', 1, '{oops')",
        ((T0 + timedelta(seconds=1)).isoformat(),),
    )
    db.execute(
        "INSERT INTO runs VALUES ('future', 'j', 'manual', NULL, ?, 'success', 9, '{}')",
        ((T0 + timedelta(seconds=2)).isoformat(),),
    )
    db.commit()
    runs = {r["run_id"]: r for r in store.recent("j")}
    assert runs["bad"]["status"] == "unreadable" and "not valid JSON" in runs["bad"]["reason"]
    assert "newer Poller" in runs["future"]["reason"]
    assert runs["good"]["status"] == "success"
    assert "run bad in the history cannot be read" in caplog.text
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (3,)


def test_job_state_and_last_fire(store: HistoryStore) -> None:
    store.save_job_states([("j", "abc", T0)])
    assert store.job_states() == {"j": JobState("abc", T0, None)}
    store.claim_fire("j", T0 + timedelta(seconds=5))
    assert store.job_states() == {"j": JobState("abc", T0, T0 + timedelta(seconds=5))}
    # A new definition keeps the last fire: no fire before it can run again.
    store.save_job_states([("j", "def", T0 + timedelta(seconds=7))])
    assert store.job_states() == {
        "j": JobState("def", T0 + timedelta(seconds=7), T0 + timedelta(seconds=5))
    }


def write_old_database(path: Path, schema: str, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
    """A history database as an older Poller left it: its tables, then (SQL, values) rows."""
    db = sqlite3.connect(path)
    db.executescript(schema)
    for sql, values in rows:
        db.execute(sql, values)
    db.commit()
    db.close()


def test_a_database_without_last_fire_takes_it_from_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    runs = (("r1", T0, "schedule"), ("r2", T0 + timedelta(1), "manual"))
    write_old_database(
        path,
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, definition TEXT NOT NULL, "
        "anchor TEXT NOT NULL, version INTEGER NOT NULL);"
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, "
        "trigger TEXT NOT NULL, scheduled_for TEXT, started_at TEXT NOT NULL, "
        "status TEXT NOT NULL, version INTEGER NOT NULL, record TEXT NOT NULL);",
        [("INSERT INTO jobs VALUES ('j', 'abc', ?, 1)", (T0.isoformat(),))]
        + [
            (
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                _row(record(run_id, at, trigger=trigger)),
            )
            for run_id, at, trigger in runs
        ],
    )
    store = HistoryStore(path)
    try:
        assert store.job_states() == {"j": JobState("abc", T0, T0)}
    finally:
        store.close()


def test_the_fire_ledger_starts_from_an_older_history(tmp_path: Path) -> None:
    path = tmp_path / "session2.db"
    # Poller kept last_fire in the jobs table before it had a ledger file of its own.
    write_old_database(
        path,
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, definition TEXT NOT NULL, "
        "anchor TEXT NOT NULL, version INTEGER NOT NULL, last_fire TEXT);",
        [("INSERT INTO jobs VALUES ('j', 'abc', ?, 1, ?)", (T0.isoformat(), _iso(T0, 9)))],
    )
    store = HistoryStore(path)
    try:
        assert store.job_states()["j"].last_fire == T0 + timedelta(seconds=9)
        assert not store.claim_fire("j", T0 + timedelta(seconds=9))
        store.save_job_states([("k", "abc", T0)])  # the old table takes new jobs too
        assert store.claim_fire("k", T0)
    finally:
        store.close()
    assert (tmp_path / "session2.db.fires").exists()


def test_a_lost_fire_ledger_is_rebuilt_from_the_runs(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "poller.db")
    store.save_job_states([("j", "abc", T0)])
    store.claim_fire("j", T0)
    store.save(record("r1", T0, status="success"))
    store.close()
    (tmp_path / "poller.db.fires").unlink()
    store = HistoryStore(tmp_path / "poller.db")
    try:
        assert not store.claim_fire("j", T0)  # the record of the fire is enough
        assert store.claim_fire("j", T0 + timedelta(seconds=1))
    finally:
        store.close()


def _iso(start: datetime, seconds: int) -> str:
    return (start + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def test_one_daemon_per_database(store: HistoryStore) -> None:
    store.acquire_daemon_lock()
    other = HistoryStore(store.path)
    try:
        with pytest.raises(DatabaseLockedError, match=r"in use by another Poller daemon \(pid"):
            other.acquire_daemon_lock()
    finally:
        other.close()


def test_briefs_are_each_jobs_newest_runs(store: HistoryStore) -> None:
    for i in range(5):
        for job_id in ("j", "k"):
            at = T0 + timedelta(minutes=i)
            store.save(
                record(f"{job_id}{i}", at, job_id=job_id, status="success")
                | {"finished_at": (at + timedelta(seconds=2)).isoformat()}
            )
    db = sqlite3.connect(store.path)
    db.execute(
        "INSERT INTO runs VALUES ('bad', 'k', 'manual', NULL, ?, 'success', 1, '{oops')",
        ((T0 + timedelta(hours=1)).isoformat(),),
    )
    db.commit()
    briefs = store.briefs(["j", "k", "none"], 2)
    assert [b["run_id"] for b in briefs["j"]] == ["j4", "j3"]
    assert briefs["j"][0]["duration_ms"] == 2000
    assert [(b["run_id"], b["status"]) for b in briefs["k"]] == [
        ("bad", "unreadable"),
        ("k4", "success"),
    ]
    assert briefs["none"] == []
