"""The SQLite run history: one run per fire, interrupted runs, pruning, unreadable rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from poller.history import DatabaseLockedError, HistoryStore, JobState

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
    assert store.claim(record("r1", T0))
    assert not store.claim(record("r2", T0))
    # The same instant written with another offset is the same fire.
    assert not store.claim(record("r3", T0.astimezone(ZoneInfo("Asia/Kolkata"))))
    assert store.claim(record("r4", T0, trigger="manual"))
    assert store.claim(record("r5", T0 + timedelta(seconds=1)))
    assert [r["run_id"] for r in store.recent("j")] == ["r5", "r4", "r1"]


def test_mark_interrupted(store: HistoryStore) -> None:
    store.claim(record("r1", T0))
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
    store.claim(record("r1", T0 + timedelta(seconds=5)))
    store.save(record("r2", T0 + timedelta(seconds=3), status="skipped"))
    store.save(record("r3", T0 + timedelta(seconds=9), trigger="manual"))
    # The last fire is the newest scheduled one, whatever became of it; manual runs don't count.
    assert store.job_states() == {"j": JobState("abc", T0, T0 + timedelta(seconds=5))}


def test_one_daemon_per_database(store: HistoryStore) -> None:
    store.acquire_daemon_lock()
    other = HistoryStore(store.path)
    try:
        with pytest.raises(DatabaseLockedError, match=r"in use by another Poller daemon \(pid"):
            other.acquire_daemon_lock()
    finally:
        other.close()
