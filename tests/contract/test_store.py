"""The store contract (poller.store.base.Store), run over every implementation.

A new store passes by adding its factory to STORES; nothing here knows which one it talks to
but for `store.shared` (several daemons at once: PostgreSQL).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from poller.errors import PollerError
from poller.run.results import RunResult, skipped_result, started_result
from poller.store import Claim, JobState, SqliteStore, Store
from poller.store.postgres import PostgresStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

STORES: dict[str, Callable[[pytest.FixtureRequest], Callable[[], Store]]] = {
    "sqlite": lambda request: (
        lambda: SqliteStore(request.getfixturevalue("tmp_path") / "state" / "poller.db")
    ),
    # A fresh database of the session's throwaway cluster (tests/pgcluster.py).
    "postgresql": lambda request: functools.partial(
        PostgresStore, request.getfixturevalue("pg_url")
    ),
}


@pytest.fixture(params=sorted(STORES))
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], Store]]:
    """Opens stores on one and the same data (the daemon's, a reader's); closed afterwards."""
    opened: list[Store] = []
    factory = STORES[request.param](request)

    def make() -> Store:
        opened.append(factory())
        return opened[-1]

    yield make
    for store in reversed(opened):
        store.close()


@pytest.fixture
def store(make_store: Callable[[], Store]) -> Store:
    """The daemon's store: it holds the lock, so it may claim fires."""
    daemon = make_store()
    daemon.acquire_daemon_lock()
    return daemon


def started(job_id: str, at: datetime, **fields: Any) -> RunResult:
    return dataclasses.replace(
        started_result(job_id, trigger="schedule", started_at=at, scheduled_for=at), **fields
    )


def claim(store: Store, job_id: str, at: datetime) -> bool:
    [answer] = store.claim([Claim(job_id, at, started(job_id, at))])
    return answer == "claimed"


def record(run_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "job_id": "j",
        "trigger": "manual",
        "scheduled_for": None,
        "started_at": at.isoformat(),
        "finished_at": None,
        "status": "running",
        "reason": None,
        "steps": [],
        "output": None,
        **fields,
    }


def test_a_fire_is_claimed_once_and_a_crash_leaves_its_record(store: Store) -> None:
    assert claim(store, "j", T0)
    assert not claim(store, "j", T0)
    # The same instant written with another offset is the same fire; an earlier one is past.
    assert not claim(store, "j", T0.astimezone(ZoneInfo("Asia/Kolkata")))
    assert not claim(store, "j", T0 - timedelta(seconds=1))
    assert claim(store, "j", T0 + timedelta(seconds=1))
    # The process dies before any record of the two runs is written: the next start
    # finds exactly one record of each claimed fire, and no other.
    assert store.mark_interrupted("crashed", T0 + timedelta(minutes=1)) == 2
    records = store.recent("j")
    assert sorted(r["scheduled_for"] for r in records) == [
        T0.isoformat(),
        (T0 + timedelta(seconds=1)).isoformat(),
    ]
    assert {(r["status"], r["reason"], r["trigger"]) for r in records} == {
        ("interrupted", "crashed", "schedule")
    }
    assert store.mark_interrupted("crashed", T0 + timedelta(minutes=2)) == 0


def test_claims_of_one_wake_are_one_transaction_each_answered(store: Store) -> None:
    at = T0 + timedelta(seconds=1)
    skipped = skipped_result("k", "misfire", trigger="catch-up", at=at, scheduled_for=T0)
    answers = store.claim(
        [
            Claim("j", T0, started("j", T0)),
            Claim("k", T0, skipped),
            Claim("j", T0, started("j", T0)),
        ]
    )
    assert answers == ["claimed", "claimed", "taken"]
    assert store.job_states()["k"].last_fire == T0
    # The process dies before the records are written: each claim leaves its own (and
    # only the run counts as interrupted).
    assert store.mark_interrupted("crashed", at) == 1
    assert [(r["status"], r["reason"]) for r in store.recent("k")] == [("skipped", "misfire")]
    assert [r["status"] for r in store.recent("j")] == ["interrupted"]


def test_job_states_keep_anchor_grid_and_last_fire(store: Store) -> None:
    store.save_job_states({"j": JobState("abc", T0, None)})
    assert store.job_states() == {"j": JobState("abc", T0, None)}
    claim(store, "j", T0 + timedelta(seconds=5))
    assert store.job_states() == {"j": JobState("abc", T0, T0 + timedelta(seconds=5))}
    # A new grid keeps the last fire: no fire before it can run again.
    store.save_job_states({"j": JobState("def", T0 + timedelta(seconds=7), None)})
    assert store.job_states() == {
        "j": JobState("def", T0 + timedelta(seconds=7), T0 + timedelta(seconds=5))
    }
    assert not claim(store, "j", T0 + timedelta(seconds=5))


def test_a_reader_sees_the_anchors_beside_the_daemon(
    store: Store, make_store: Callable[[], Store]
) -> None:
    store.save_job_states({"j": JobState("abc", T0, None)})
    claim(store, "j", T0 + timedelta(seconds=5))
    reader = make_store()  # no lock: another process, such as `app.py check`
    assert reader.job_anchors() == {"j": JobState("abc", T0, None)}


def test_a_claim_of_a_job_without_state_starts_one(store: Store) -> None:
    assert claim(store, "new", T0)
    assert store.job_states()["new"] == JobState(None, T0, T0)


def test_save_later_writes_a_run_once_in_its_newest_state(store: Store) -> None:
    running = started("j", T0)
    store.claim([Claim("j", T0, running)])
    done = dataclasses.replace(running, status="success", finished_at=T0 + timedelta(seconds=1))
    store.save_later(done)
    assert store.get(running.run_id) == done.to_dict()  # seen before it is written
    store.flush()
    assert store.queued(running.run_id) is None
    assert store.recent("j") == [done.to_dict()]
    assert store.totals() == {"success": 1}
    assert store.failing() is None
    assert store.mark_interrupted("crashed", T0) == 0  # the written record ended the claim


def test_a_run_still_going_at_a_crash_is_recorded_interrupted_once(store: Store) -> None:
    running = started("j", T0)
    store.claim([Claim("j", T0, running)])
    store.save_later(running)  # a long run: its start is written, its end never
    store.flush()
    assert [r["status"] for r in store.recent("j")] == ["running"]
    assert store.mark_interrupted("crashed", T0 + timedelta(minutes=1)) == 1
    [record] = store.recent("j")
    assert record["run_id"] == running.run_id and record["status"] == "interrupted"


def test_a_reader_sees_what_the_daemon_wrote(make_store: Callable[[], Store]) -> None:
    daemon = make_store()
    daemon.acquire_daemon_lock()
    reader = daemon.open_reader()
    try:
        daemon.save(record("r1", T0))
        assert [r["run_id"] for r in reader.recent()] == ["r1"]
    finally:
        reader.close()


def test_mark_interrupted_ends_what_was_left_running(store: Store) -> None:
    store.save(record("r1", T0))
    store.save(record("r2", T0 + timedelta(seconds=1), status="success"))
    claim(store, "j", T0 + timedelta(seconds=2))  # claimed, then the process died
    assert store.mark_interrupted("stopped", T0 + timedelta(minutes=1)) == 2
    run = store.get("r1")
    assert run is not None and run["status"] == "interrupted" and run["reason"] == "stopped"
    assert store.totals() == {"interrupted": 2, "success": 1}
    assert store.mark_interrupted("stopped", T0 + timedelta(minutes=2)) == 0


def test_prune_by_age_and_count_keeps_running_runs(store: Store) -> None:
    for i in range(10):
        store.save(record(f"r{i}", T0 + timedelta(minutes=i), status="success"))
    store.save(record("old", T0 - timedelta(days=40), status="success"))
    store.save(record("going", T0 - timedelta(days=41)))
    assert store.prune(max_age_days=30, max_runs_per_job=4, now=T0 + timedelta(hours=1)) == 7
    assert [r["run_id"] for r in store.recent("j")] == ["r9", "r8", "r7", "r6", "going"]


def test_recent_filters_and_orders(store: Store) -> None:
    for i, status in enumerate(("success", "failed", "success")):
        store.save(record(f"r{i}", T0 + timedelta(minutes=i), status=status))
    assert [r["run_id"] for r in store.recent("j", limit=2)] == ["r2", "r1"]
    assert [r["run_id"] for r in store.recent(status="success")] == ["r2", "r0"]
    assert store.recent("other") == []


def test_briefs_are_each_jobs_newest_runs(store: Store) -> None:
    for i in range(5):
        for job_id in ("j", "k"):
            at = T0 + timedelta(minutes=i)
            finished = (at + timedelta(seconds=2)).isoformat()
            fields = {"dry_run": True} if job_id == "k" and i == 4 else {}
            store.save(
                record(
                    f"{job_id}{i}",
                    at,
                    job_id=job_id,
                    status="success",
                    finished_at=finished,
                    **fields,
                )
            )
    briefs = store.briefs(["j", "k", "none"], 2)
    assert [b["dry_run"] for b in briefs["k"]] == [True, False]  # j's have no such key
    assert [b["run_id"] for b in briefs["j"]] == ["j4", "j3"]
    assert briefs["j"][0]["duration_ms"] == 2000
    assert briefs["k"][0]["status"] == "success" and briefs["k"][0]["trigger"] == "manual"
    assert briefs["none"] == []


def test_one_daemon_per_store_unless_shared(make_store: Callable[[], Store]) -> None:
    first, second, reader = make_store(), make_store(), make_store()
    assert reader.daemons() == []
    first.acquire_daemon_lock()
    if not first.shared:
        with pytest.raises(PollerError, match=r"in use by another Poller daemon \(pid"):
            second.acquire_daemon_lock()
        [seen] = reader.daemons()
        assert seen["pid"] == os.getpid() and not seen["this"]
        return
    second.acquire_daemon_lock()
    assert [d["this"] for d in first.daemons()] == [True, False]
    assert [(d["pid"], d["alive"]) for d in reader.daemons()] == [(os.getpid(), True)] * 2
    second.close()
    assert len(reader.daemons()) == 1  # a daemon that stops leaves


def test_the_first_to_save_a_grid_sets_its_anchor(make_store: Callable[[], Store]) -> None:
    one, other = make_store(), make_store()
    assert one.save_job_states({"j": JobState("abc", T0, None)}) == {"j": JobState("abc", T0, None)}
    # Another daemon sees the job for the first time a second later: it keeps the anchor.
    later = T0 + timedelta(seconds=1)
    assert other.save_job_states(
        {"j": JobState("abc", later, None), "k": JobState("x", later, None)}
    ) == {
        "j": JobState("abc", T0, None),
        "k": JobState("x", later, None),
    }
    assert one.job_anchors()["j"] == JobState("abc", T0, None)


def test_a_manual_run_is_started_through_a_claim(store: Store) -> None:
    record = started_result("j", trigger="manual", started_at=T0)
    assert store.claim([Claim("j", None, record, room=0)]) == ["claimed"]
    assert store.get(record.run_id) == record.to_dict()
    assert store.mark_interrupted("crashed", T0 + timedelta(minutes=1)) == 1


def test_notes_are_kept_per_job_and_name_and_seen_by_other_handles(
    make_store: Callable[[], Store],
) -> None:
    store = make_store()
    assert store.note("a", "baseline") is None
    store.save_note("a", "baseline", {"fingerprint": "x", "leaves": {"k": [1, "é"]}})
    store.save_note("a", "alerts", {"failing": True})
    store.save_note("b", "baseline", {"fingerprint": "y"})
    store.save_note("a", "baseline", {"fingerprint": "z"})  # replaces
    reader = store.open_reader()
    assert reader.note("a", "baseline") == {"fingerprint": "z"}
    assert reader.note("a", "alerts") == {"failing": True}
    assert reader.note("b", "baseline") == {"fingerprint": "y"}
    assert reader.note("b", "alerts") is None
    store.close()
    again = make_store()
    assert again.note("a", "alerts") == {"failing": True}  # across a restart
    again.drop_note("a", "alerts")
    again.drop_note("a", "never-noted")  # nothing to forget: no error
    assert reader.note("a", "alerts") is None
    assert reader.note("a", "baseline") == {"fingerprint": "z"}


def test_a_listing_is_replaced_whole_seen_by_other_handles_and_pruned_when_old(
    make_store: Callable[[], Store],
) -> None:
    store = make_store()
    assert store.listing("sftp://h/in|*.csv") == {}
    assert store.prune_listings(30, T0) == 0  # nothing listed yet: no tables to prune
    store.save_listing("sftp://h/in|*.csv", {"a.csv": "1|t1|", "b.csv": "2|t2|"}, T0)
    store.save_listing("local:///x|*", {"é.txt": "3||"}, T0 + timedelta(days=20))
    store.save_listing("sftp://h/in|*.csv", {"b.csv": "2|t3|", "c.csv": "5||"}, T0)  # replaces
    reader = store.open_reader()
    assert reader.listing("sftp://h/in|*.csv") == {"b.csv": "2|t3|", "c.csv": "5||"}
    assert reader.listing("local:///x|*") == {"é.txt": "3||"}
    assert store.prune_listings(30, T0 + timedelta(days=31)) == 1  # the older scope only
    assert store.listing("sftp://h/in|*.csv") == {}
    store.save_listing("big", {f"f{i:05}": str(i) for i in range(10_000)}, T0)
    store.close()
    assert len(make_store().listing("big")) == 10_000  # across a restart
