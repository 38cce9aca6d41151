"""Several real `python app.py` daemons on one real PostgreSQL database (SPEC §11): every
fire once, whichever daemon dies. Each daemon has a folder of its own (its own machine, as
far as config, log and API key go) and the same config; the cluster is tests/pgcluster.py.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from poller.run.results import started_result
from poller.store import Claim
from poller.store.postgres import PostgresStore
from poller.timeformat import parse
from tests.apiproc import API_KEY, FUNCTIONS, ApiDaemon, api_settings
from tests.daemonproc import DaemonProcess, run_app, wait_until
from tests.pgcluster import PASSWORD, Cluster

LEASE = 3.0


@pytest.fixture
def shared(pg_cluster: Cluster, pg_url: str) -> str:
    """The database's URL as the configs say it: the password through ${…}."""
    return pg_cluster.url(pg_url.rsplit("/", 1)[1])


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.stop()


def machine(
    tmp_path: Path, name: str, url: str, jobs: list[dict[str, Any]], **settings: Any
) -> DaemonProcess:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "steps.py").write_text(FUNCTIONS)
    config = {
        "settings": {
            "timezone": "UTC",
            "state_db": url,
            "daemon_lease_seconds": LEASE,
            **settings,
        },
        "jobs": jobs,
    }
    return DaemonProcess(folder, config, env={"POLLER_API_KEY": API_KEY})


def pair(
    tmp_path: Path,
    url: str,
    jobs: list[dict[str, Any]],
    daemons: list[DaemonProcess],
) -> tuple[DaemonProcess, DaemonProcess]:
    one = machine(tmp_path, "one", url, jobs)
    other = machine(tmp_path, "other", url, jobs)
    daemons += [one, other]
    return one.start(), other.start()


def tick(job_id: str, every: str = "1s", **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "every": every,
        "integrationIDs": [[{"function": "steps:tick"}]],
        **fields,
    }


def nap(job_id: str, seconds: float, every: str = "1s", **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "every": every,
        "input": {"seconds": seconds},
        "integrationIDs": [[{"function": "steps:nap"}]],
        **fields,
    }


def rows(url: str, where: str = "TRUE", args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Run rows with the daemon that wrote each (pid, by its heartbeat row while it lives)."""
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT record, daemon_id FROM poller_runs WHERE " + where, args
        ).fetchall()
    return [{**json.loads(record), "daemon_id": daemon} for record, daemon in found]


def fires(records: list[dict[str, Any]], job_id: str) -> list[datetime]:
    return sorted(
        parse(r["scheduled_for"])
        for r in records
        if r["job_id"] == job_id and r["trigger"] in ("schedule", "catch-up")
    )


def assert_every_slot_once(slots: list[datetime], step: float, since: datetime) -> None:
    """One record per slot, none missing, from `since` (whichever daemon claimed each)."""
    slots = [slot for slot in slots if slot >= since]
    doubles = [slot for slot, n in Counter(slots).items() if n > 1]
    assert not doubles, doubles
    gaps = [(a, b) for a, b in itertools.pairwise(slots) if b - a != timedelta(seconds=step)]
    assert not gaps, gaps


def test_two_daemons_run_every_slot_of_three_jobs_exactly_once(
    tmp_path: Path, shared: str, pg_url: str, daemons: list[DaemonProcess]
) -> None:
    jobs = [tick("a"), tick("b"), tick("c")]
    one = machine(tmp_path, "one", shared, jobs, api=api_settings())
    other = machine(tmp_path, "other", shared, jobs)
    daemons += [one, other]
    one.start()
    other.start()
    both_from = datetime.now().astimezone() + timedelta(seconds=1)
    time.sleep(10)  # the run under test: ten seconds of slots on both daemons
    api = ApiDaemon(one)
    status = api.json("/status")
    assert status["store"] == "postgresql"
    assert [(d["this"], d["alive"]) for d in status["daemons"]] == [(True, True), (False, True)]
    listed = run_app(one.folder, "status", "--json", env={**os.environ})
    assert listed.returncode == 0, listed.stderr
    assert sorted(d["pid"] for d in json.loads(listed.stdout)["daemons"]) == sorted(
        [one.proc.pid, other.proc.pid]  # type: ignore[union-attr]
    )
    history = run_app(one.folder, "history", "a", "--json", env={**os.environ})
    assert history.returncode == 0 and json.loads(history.stdout), history.stderr
    anchors = run_app(one.folder, "check", "--json", env={**os.environ})
    assert {j["anchor"] for j in json.loads(anchors.stdout)["jobs"]} == {"stored"}
    one.stop()
    other.stop()
    records = rows(pg_url)
    for job_id in "abc":
        slots = fires(records, job_id)
        assert_every_slot_once(slots, 1.0, both_from)
        assert len([s for s in slots if s >= both_from]) >= 8
    assert {r["status"] for r in records} == {"success"}
    for daemon in (one, other):
        assert PASSWORD not in daemon.log() + daemon.stderr()
        assert "already handled" not in daemon.log()  # a taken fire is no warning here
    assert PASSWORD not in listed.stdout + listed.stderr + json.dumps(status)


def test_a_killed_daemon_leaves_no_gap_and_its_runs_are_marked_after_the_lease(
    tmp_path: Path, shared: str, pg_url: str, daemons: list[DaemonProcess]
) -> None:
    jobs = [tick("a"), tick("b"), nap("slow", 60, every="1s")]
    one, other = pair(tmp_path, shared, jobs, daemons)
    # Whichever daemon claimed the slow job's fire first holds its one instance.
    [holding] = wait_until(lambda: rows(pg_url, "job_id = 'slow' AND status = 'running'"))
    with psycopg.connect(pg_url) as conn:
        [(pid,)] = conn.execute(
            "SELECT pid FROM poller_daemons WHERE daemon_id = %s", (holding["daemon_id"],)
        ).fetchall()
    victim, survivor = (one, other) if pid == one.proc.pid else (other, one)  # type: ignore[union-attr]
    time.sleep(1.5)
    killed_at = datetime.now().astimezone()
    os.kill(pid, signal.SIGKILL)
    victim.wait_exit()
    # The survivor ends the dead one's run once its lease is over (and a sweep came).
    ended = wait_until(
        lambda: rows(pg_url, "run_id = %s AND status = 'interrupted'", (holding["run_id"],)),
        timeout=LEASE + 5,
        what="the dead daemon's run to be marked interrupted",
    )
    assert "stopped heartbeating" in ended[0]["reason"]
    assert parse(ended[0]["finished_at"]) - killed_at >= timedelta(seconds=LEASE - 1.5)
    # ... and its instance is free again: the survivor runs the slow job itself.
    wait_until(
        lambda: rows(
            pg_url,
            "job_id = 'slow' AND status = 'running' AND daemon_id != %s",
            (holding["daemon_id"],),
        ),
        timeout=5,
        what="the survivor to start the slow job",
    )
    time.sleep(2)
    survivor.stop()
    records = rows(pg_url)
    for job_id in "ab":
        assert_every_slot_once(fires(records, job_id), 1.0, killed_at - timedelta(seconds=2))
    assert "silent since" in survivor.log()


def test_both_killed_then_restarted_catch_up_once(
    tmp_path: Path, shared: str, pg_url: str, daemons: list[DaemonProcess]
) -> None:
    jobs = [tick("a", every="2s"), tick("b", every="2s")]
    one, other = pair(tmp_path, shared, jobs, daemons)
    wait_until(lambda: len(rows(pg_url, "job_id = 'a'")) >= 2, what="two runs of a")
    for daemon in (one, other):
        daemon.signal(signal.SIGKILL)
        daemon.wait_exit()
    down_from = datetime.now().astimezone()
    time.sleep(7)  # three or four fires of each job missed
    restart = datetime.now().astimezone()
    one.start()
    other.start()
    wait_until(
        lambda: len(rows(pg_url, "trigger = 'catch-up' AND status = 'success'")) >= 2,
        what="the catch-up runs",
    )
    time.sleep(1)
    one.stop()
    other.stop()
    records = rows(pg_url)
    for job_id in "ab":
        missed = [
            r
            for r in records
            if r["job_id"] == job_id and down_from < parse(r["scheduled_for"]) <= restart
        ]
        runs = [r for r in missed if r["status"] != "skipped"]
        assert [r["trigger"] for r in runs] == ["catch-up"], missed  # once, by one daemon
        assert Counter(fires(records, job_id)).most_common(1)[0][1] == 1


def test_max_instances_holds_across_two_daemons(
    tmp_path: Path, shared: str, pg_url: str, daemons: list[DaemonProcess]
) -> None:
    jobs = [nap("slow", 3, every="1s")]
    one = machine(tmp_path, "one", shared, jobs, api=api_settings())
    other = machine(tmp_path, "other", shared, jobs, api=api_settings())
    daemons += [one, other]
    apis = {daemon.start().proc.pid: ApiDaemon(daemon) for daemon in (one, other)}  # type: ignore[union-attr]
    [holding] = wait_until(lambda: rows(pg_url, "job_id = 'slow' AND status = 'running'"))
    with psycopg.connect(pg_url) as conn:
        [(pid,)] = conn.execute(
            "SELECT pid FROM poller_daemons WHERE daemon_id = %s", (holding["daemon_id"],)
        ).fetchall()
    # The daemon that runs nothing of the job finds no room: the other's run counts.
    [idle] = [api for daemon_pid, api in apis.items() if daemon_pid != pid]
    refused = idle.post("/jobs/slow/trigger")
    assert refused.status_code == 409, refused.text
    wait_until(
        lambda: len(rows(pg_url, "status = 'success'")) >= 2, timeout=15, what="two slow runs"
    )
    one.stop()
    other.stop()
    records = rows(pg_url)
    ran = sorted(
        (parse(r["started_at"]), parse(r["finished_at"]))
        for r in records
        if r["status"] in ("success", "interrupted")
    )
    overlaps = [(a, b) for a, b in itertools.pairwise(ran) if b[0] < a[1]]
    assert not overlaps, overlaps


def test_a_database_this_poller_cannot_read_is_reported_and_left_alone(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE poller_runs (x int)")
    with pytest.raises(Exception, match="not made by Poller") as raised:
        PostgresStore(pg_url)
    assert PASSWORD not in str(raised.value)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE poller_runs")
    PostgresStore(pg_url).close()  # makes the schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE poller_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(Exception, match=r"newer Poller \(schema version 99\)"):
        PostgresStore(pg_url)
    with psycopg.connect(pg_url) as conn:
        [(version,)] = conn.execute("SELECT value FROM poller_meta").fetchall()
    assert version == "99"  # not altered


def test_claims_racing_from_two_daemons_each_win_once(pg_url: str) -> None:
    """Two handles claim the same fires at once, in opposite job orders, many wakes of
    three jobs each: every fire is claimed exactly once, with no deadlock or error
    (which handle wins which fire is up to the race)."""
    stores = [PostgresStore(pg_url), PostgresStore(pg_url)]
    for store in stores:
        store.acquire_daemon_lock()
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    wins: list[list[str]] = [[], []]
    errors: list[BaseException] = []
    together = threading.Barrier(2)

    def claimer(n: int) -> None:
        together.wait()
        try:
            claim_all(n)
        except BaseException as err:
            errors.append(err)

    def claim_all(n: int) -> None:
        for second in range(200):
            at = start + timedelta(seconds=second)
            jobs = ["a", "b", "c"] if n == 0 else ["c", "b", "a"]
            claims = [
                Claim(
                    job,
                    at,
                    started_result(job, trigger="schedule", started_at=at, scheduled_for=at),
                )
                for job in jobs
            ]
            answers = stores[n].claim(claims)
            wins[n] += [
                f"{c.job_id}@{second}"
                for c, a in zip(claims, answers, strict=True)
                if a == "claimed"
            ]

    threads = [threading.Thread(target=claimer, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for store in stores:
        store.close()
    assert not errors
    assert sorted(wins[0] + wins[1]) == sorted(f"{j}@{s}" for j in "abc" for s in range(200))


def test_the_database_going_away_holds_fires_and_they_resume_when_it_is_back(
    tmp_path: Path, shared: str, pg_url: str, pg_cluster: Cluster, daemons: list[DaemonProcess]
) -> None:
    daemon = machine(tmp_path, "one", shared, [tick("a")], api=api_settings())
    daemons.append(daemon)
    daemon.start()
    api = ApiDaemon(daemon)
    wait_until(lambda: len(rows(pg_url, "job_id = 'a'")) >= 2, what="two runs")
    pg_cluster.stop()
    try:
        daemon.wait_log("the state database cannot be written since", timeout=20)
        health = api.get("/health")
        assert health.status_code == 503 and "state database" in health.json()["reason"]
    finally:
        pg_cluster.start()
    back = datetime.now().astimezone()
    wait_until(
        lambda: len(rows(pg_url, "job_id = 'a' AND started_at > %s", (back,))) >= 3,
        timeout=20,
        what="fires after the database is back",
    )
    wait_until(lambda: api.get("/health").status_code == 200, what="healthy again")
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert Counter(fires(rows(pg_url), "a")).most_common(1)[0][1] == 1
    assert PASSWORD not in daemon.log() + daemon.stderr()


def test_a_manual_run_finds_no_room_while_another_daemon_runs_the_job(pg_url: str) -> None:
    one, other = PostgresStore(pg_url), PostgresStore(pg_url)
    one.acquire_daemon_lock()
    other.acquire_daemon_lock()
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    going = started_result("j", trigger="schedule", started_at=at, scheduled_for=at)
    assert one.claim([Claim("j", at, going, room=0)]) == ["claimed"]
    manual = started_result("j", trigger="manual", started_at=at)
    assert other.claim([Claim("j", None, manual, room=0)]) == ["full"]
    assert other.get(manual.run_id) is None  # nothing written
    assert other.claim([Claim("j", None, manual, room=1)]) == ["claimed"]  # max_instances 2
    one.close()
    other.close()


def test_a_change_is_detected_once_whichever_daemon_runs_the_job(
    tmp_path: Path, shared: str, pg_url: str, daemons: list[DaemonProcess]
) -> None:
    """The baseline is shared: a daemon must not compare with the one it last saw itself.
    Which daemon runs a fire is up to a race, so each is held in turn with SIGSTOP (for
    less than its lease) to make the other run the job."""
    value = tmp_path / "value.txt"
    value.write_text("one")
    job = {
        "id": "w",
        "every": "1s",
        "input": {"path": str(value)},
        "integrationIDs": [[{"function": "watch:read"}]],
        "detect_changes": True,
    }
    one = machine(tmp_path, "one", shared, [job], daemon_lease_seconds=30)
    other = machine(tmp_path, "other", shared, [job], daemon_lease_seconds=30)
    for daemon in (one, other):
        (daemon.folder / "watch.py").write_text(
            "from pathlib import Path\n\n"
            "def read(data, context):\n"
            "    return {'value': Path(data['path']).read_text()}\n"
        )
    daemons += [one, other]

    def runs_by(daemon: DaemonProcess, after: datetime) -> list[dict[str, Any]]:
        with psycopg.connect(pg_url) as conn:
            [(daemon_id,)] = conn.execute(
                "SELECT daemon_id FROM poller_daemons WHERE pid = %s",
                (daemon.proc.pid,),  # type: ignore[union-attr]
            ).fetchall()
        return rows(
            pg_url,
            "job_id = 'w' AND status = 'success' AND daemon_id = %s AND started_at > %s",
            (daemon_id, after),
        )

    start = datetime.now().astimezone()
    one.start()
    wait_until(lambda: len(runs_by(one, start)) >= 2, what="two runs on the first daemon")
    other.start()
    one.signal(signal.SIGSTOP)  # the second daemon sees the change and moves the baseline
    try:
        value.write_text("two")
        changed_at = datetime.now().astimezone()
        wait_until(lambda: runs_by(other, changed_at), what="a run on the second daemon")
    finally:
        one.signal(signal.SIGCONT)
    other.signal(signal.SIGSTOP)  # the first daemon runs again, with "two" as before
    try:
        back = datetime.now().astimezone()
        wait_until(lambda: runs_by(one, back), what="a run on the first daemon again")
    finally:
        other.signal(signal.SIGCONT)
    one.stop()
    other.stop()
    changed = [r for r in rows(pg_url, "job_id = 'w'") if r.get("changed")]
    assert len(changed) == 1, [(r["started_at"], r["daemon_id"][:6]) for r in changed]
