"""The SQLite store's own parts: its file, unreadable rows, migrating an older Poller's files,
and the record writer that keeps a batch the disk refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from poller.errors import StateFileError
from poller.run.results import RunResult, started_result
from poller.store import Claim, JobState, SqliteStore
from poller.store.writer import RecordQueue
from tests.daemonproc import DaemonProcess, run_app, wait_until

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
V1_FOLDER = Path(__file__).parent / "data" / "v1"

V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE runs (run_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, trigger TEXT NOT NULL,
    scheduled_for TEXT, started_at TEXT NOT NULL, status TEXT NOT NULL,
    version INTEGER NOT NULL, record TEXT NOT NULL);
CREATE UNIQUE INDEX runs_one_per_fire ON runs (job_id, scheduled_for)
    WHERE trigger IN ('schedule', 'catch-up');
CREATE TABLE jobs (job_id TEXT PRIMARY KEY, definition TEXT NOT NULL, anchor TEXT NOT NULL,
    version INTEGER NOT NULL);
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "state" / "poller.db")
    opened.acquire_daemon_lock()
    yield opened
    opened.close()


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def test_the_file_is_wal_at_the_current_schema(store: SqliteStore) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)


def test_durability_full_waits_for_the_disk(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "poller.db", durability="full")
    try:
        assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        store.close()
    store = SqliteStore(tmp_path / "poller.db")
    try:
        assert store._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    finally:
        store.close()


def test_unreadable_rows_are_reported_never_deleted(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.save(started_result("j", trigger="manual", started_at=T0, run_id="good"))
    db = sqlite3.connect(store.path)
    db.execute(
        "INSERT INTO runs VALUES ('bad', 'j', 'manual', NULL, ?, 'success', 1, '{oops')", (at(1),)
    )
    db.execute(
        "INSERT INTO runs VALUES ('future', 'j', 'manual', NULL, ?, 'success', 9, '{}')", (at(2),)
    )
    db.commit()
    runs = {r["run_id"]: r for r in store.recent("j")}
    assert runs["bad"]["status"] == "unreadable" and "not valid JSON" in runs["bad"]["reason"]
    assert "newer Poller" in runs["future"]["reason"]
    assert runs["good"]["status"] == "running"
    assert "run bad in the history cannot be read" in caplog.text
    assert store.briefs(["j"], 5)["j"][0]["status"] == "unreadable"
    assert store.mark_interrupted("gone", T0) == 1  # the good one; the others are kept as-is
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (3,)


def write_v1(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """A state database as Poller before the store package left it."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")  # as Poller always opened it
    db.executescript(V1_SCHEMA)
    for sql, values in statements:
        db.execute(sql, values)
    db.commit()
    db.close()


def write_ledger(path: Path, rows: list[tuple[str, str]]) -> None:
    db = sqlite3.connect(path.with_name(path.name + ".fires"))
    db.execute("CREATE TABLE fires (job_id TEXT PRIMARY KEY, last_fire TEXT NOT NULL)")
    db.executemany("INSERT INTO fires VALUES (?, ?)", rows)
    db.commit()
    db.close()


def run_row(run_id: str, job_id: str, seconds: float, trigger: str = "schedule") -> tuple[Any, ...]:
    record = {"run_id": run_id, "job_id": job_id, "trigger": trigger, "status": "success"}
    return (run_id, job_id, trigger, at(seconds), at(seconds), "success", 1, json.dumps(record))


def test_a_version_1_database_and_its_fire_ledger_are_migrated(tmp_path: Path) -> None:
    path = tmp_path / "poller.db"
    write_v1(
        path,
        ("INSERT INTO jobs VALUES ('j', 'hash-of-the-whole-job', ?, 1)", (at(0),)),
        ("INSERT INTO jobs VALUES ('k', 'another', ?, 1)", (at(0),)),
        ("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", run_row("r1", "j", 10)),
        ("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", run_row("r2", "k", 20)),
    )
    # The ledger is ahead of the runs for j (a claim whose record was lost), behind for k.
    write_ledger(path, [("j", at(30)), ("k", at(5))])
    store = SqliteStore(path)
    try:
        assert store.schema_version == 1  # a reader changes nothing
        store.acquire_daemon_lock()
        assert store.job_states() == {
            "j": JobState(None, T0, T0 + timedelta(seconds=30)),
            "k": JobState(None, T0, T0 + timedelta(seconds=20)),
        }
        assert [r["run_id"] for r in store.recent()] == ["r2", "r1"]
        [claimed] = store.claim([Claim("j", T0 + timedelta(seconds=31), _started("j", 31))])
        assert claimed == "claimed"
    finally:
        store.close()
    reopened = SqliteStore(path)
    try:
        assert reopened.schema_version == 3
    finally:
        reopened.close()
    ledger = sqlite3.connect(tmp_path / "poller.db.fires")
    assert ledger.execute("PRAGMA user_version").fetchone() == (2,)  # the claim journal now
    ledger.close()


def test_a_version_1_database_without_ledger_takes_last_fires_from_runs(tmp_path: Path) -> None:
    path = tmp_path / "poller.db"
    write_v1(
        path,
        ("INSERT INTO jobs VALUES ('j', 'abc', ?, 1)", (at(0),)),
        ("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", run_row("r1", "j", 10)),
        ("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", run_row("r2", "j", 50, "manual")),
    )
    store = SqliteStore(path)
    try:
        store.acquire_daemon_lock()
        assert store.job_states() == {"j": JobState(None, T0, T0 + timedelta(seconds=10))}
    finally:
        store.close()


def test_a_damaged_ledger_is_reported_and_nothing_is_changed(tmp_path: Path) -> None:
    path = tmp_path / "poller.db"
    write_v1(path, ("INSERT INTO jobs VALUES ('j', 'abc', ?, 1)", (at(0),)))
    ledger = tmp_path / "poller.db.fires"
    ledger.write_bytes(b"not a database at all, just text" * 100)
    before = path.read_bytes(), ledger.read_bytes()
    store = SqliteStore(path)
    try:
        with pytest.raises(
            StateFileError, match=r"poller\.db\.fires cannot be opened: file is not"
        ):
            store.acquire_daemon_lock()
    finally:
        store.close()
    assert (path.read_bytes(), ledger.read_bytes()) == before


def test_a_version_2_database_gains_the_notes_table_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "poller.db"
    store = SqliteStore(path)
    record = _started("j", 5)
    store.save(record)
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE notes")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    reader = SqliteStore(path, read_only=True)
    try:
        assert reader.schema_version == 2 and reader.note("j", "alerts") is None
    finally:
        reader.close()
    store = SqliteStore(path)
    try:
        store.acquire_daemon_lock()
        store.save_note("j", "alerts", {"failing": True})
        assert store.note("j", "alerts") == {"failing": True}
        assert [r["run_id"] for r in store.recent()] == [record.run_id]
        assert store.schema_version == 3
    finally:
        store.close()


def test_a_database_from_a_newer_poller_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "poller.db"
    write_v1(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StateFileError, match=r"newer Poller \(schema version 7\).*up to 3"):
        SqliteStore(path)
    assert path.read_bytes() == before


def _started(job_id: str, seconds: float) -> RunResult:
    when = T0 + timedelta(seconds=seconds)
    return started_result(job_id, trigger="schedule", started_at=when, scheduled_for=when)


def test_a_batch_the_store_refuses_is_kept_and_written_when_it_can_be() -> None:
    written: list[str] = []
    failures = [sqlite3.OperationalError("database or disk is full")] * 2
    attempts = threading.Semaphore(0)

    def write(batch: list[Any]) -> None:
        attempts.release()
        if failures:
            raise failures.pop()
        written.extend(result.run_id for result in batch)

    queue = RecordQueue(write, name="test-writer")
    first = _started("j", 1)
    queue.add(first)
    assert attempts.acquire(timeout=5)
    queue.flush()  # returns after the failed try
    assert queue.failing is not None and "disk is full" in queue.failing
    assert queue.queued(first.run_id) is first
    newer = dataclasses.replace(first, status="success")
    queue.add(newer)  # replaces the waiting one: only the newest state is written
    for _ in range(2):
        assert attempts.acquire(timeout=10)
    queue.close()
    assert written == [first.run_id] and queue.failing is None
    assert queue.queued(first.run_id) is None


def test_the_daemon_migrates_a_folder_written_by_the_version_1_daemon(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    folder = tmp_path / "v1"
    shutil.copytree(V1_FOLDER, folder)
    config = json.loads((folder / "config.json").read_text())
    daemon = DaemonProcess(folder, config)
    daemons.append(daemon)
    daemon.start()
    daemon.wait_log("migrated from schema version 1 to 3")
    old = {r["run_id"] for r in daemon.runs()}
    assert len(old) == 4  # three fires and a manual run, all readable
    new = wait_until(
        lambda: [r for r in daemon.runs("every2s", "success") if r["run_id"] not in old],
        what="a fire after the migration",
    )
    # The every-2s job keeps the anchor version 1 stored (its fires fell on odd seconds).
    anchor = datetime.fromisoformat("2026-12-02T08:03:33+00:00")
    for run in new:
        offset = (datetime.fromisoformat(run["scheduled_for"]) - anchor).total_seconds()
        assert offset % 2 == 0, run["scheduled_for"]
    daemon.stop()
    history = run_app(folder, "history", "every2s", "--json")
    assert history.returncode == 0
    fires = [r["scheduled_for"] for r in json.loads(history.stdout) if r["trigger"] != "manual"]
    assert len(fires) == len(set(fires))  # no fire recorded twice, old or new
