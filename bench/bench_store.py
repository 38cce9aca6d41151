"""Issue 18's benchmark: the SQLite store against the PostgreSQL one, with one and two daemons.

    .venv/bin/python bench/bench_store.py            # full run, about 3 minutes
    .venv/bin/python bench/bench_store.py --quick    # smoke run, about a minute

A throwaway PostgreSQL cluster (tests/pgcluster.py: on 127.0.0.1 over TCP with a password,
`fsync=off`, so the figures leave out the disk's flush) serves every PostgreSQL column;
each gets a database of its own. Two tables, PostgreSQL's ratios against SQLite:

1. Claims through the Store interface, as the daemon's loop makes them: a wake of one fire
   (the usual), then wakes of 100. `pg x2` is two processes claiming the same fires at once,
   as two daemons sharing a config do: each fire is won by one and answered `taken` to the
   other; its claims/s counts both answers. On PostgreSQL a claim carries room=0 and a
   skipped record, so the max_instances count runs as in a daemon. Every fire is a job of
   its own (no run ever ends here, so a second fire of a job would be `full`).
2. Workload (a) of bench_scheduler: 1,000 jobs `every` 1 s with a no-op chain, spread over
   each second by anchors stored before start, on real `python app.py` daemons: SQLite with
   one, PostgreSQL with one and with two (two folders, one config). CPU is the daemons'
   (user + system, from /proc) over the window, per fire run.

It asserts nothing and is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from measure import NOOP_CHAIN, TASKS_MODULE, lateness_result, percentile  # noqa: E402

from poller.config.load import load_config  # noqa: E402
from poller.plans import grid_of  # noqa: E402
from poller.run.results import skipped_result, started_result  # noqa: E402
from poller.store import Claim, JobState, SqliteStore, Store, open_store  # noqa: E402
from poller.store.postgres import PostgresStore  # noqa: E402
from tests.pgcluster import PASSWORD, Cluster, start_cluster  # noqa: E402

Result = dict[str, Any]
BASE = datetime(2030, 1, 1, tzinfo=UTC)
WARM_UP = 50
LEAD_SECONDS = 8.0
"""(a): from storing the anchors to the window's first fire, for the daemons to start."""
DRAIN_SECONDS = 2.0
TICKS = os.sysconf("SC_CLK_TCK")


def open_db(state_db: str) -> Store:
    store: Store = PostgresStore(state_db) if "://" in state_db else SqliteStore(state_db)
    store.acquire_daemon_lock()
    return store


def make_claim(job_id: str, at: datetime, shared: bool) -> Claim:
    record = started_result(job_id, trigger="schedule", started_at=at, scheduled_for=at)
    if not shared:
        return Claim(job_id, at, record)
    full = skipped_result(
        job_id,
        "already running",
        trigger="schedule",
        at=at,
        scheduled_for=at,
        run_id=record.run_id,
    )
    return Claim(job_id, at, record, room=0, when_full=full)


def claim_wakes(store: Store, prefix: str, wakes: int, per_wake: int) -> Result:
    """`wakes` claim calls of `per_wake` new fires each: latencies, answers, wall time."""
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    began = time.perf_counter()
    for k in range(wakes):
        at = BASE + timedelta(seconds=k)
        claims = [make_claim(f"{prefix}{k}.{i}", at, store.shared) for i in range(per_wake)]
        start = time.perf_counter()
        answers.update(store.claim(claims))
        latencies.append(time.perf_counter() - start)
    return {"latencies": latencies, "answers": dict(answers), "wall": time.perf_counter() - began}


def claimer(state_db: str, parts: list[tuple[str, int, int]], barrier: Any, out: Any) -> None:
    """One process, one store, one daemon: each part starts with the other claimers'."""
    store = open_db(state_db)
    claim_wakes(store, "warm", WARM_UP, 1)
    for prefix, wakes, per_wake in parts:
        barrier.wait()
        out.put((prefix, claim_wakes(store, prefix, wakes, per_wake)))
    store.close()


def claims_column(state_db: str, processes: int, parts: list[tuple[str, int, int]]) -> Result:
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(processes), context.Queue()
    children = [
        context.Process(target=claimer, args=(state_db, parts, barrier, out))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    got: dict[str, list[Result]] = {}
    for _ in range(processes * len(parts)):
        prefix, result = out.get(timeout=600)
        got.setdefault(prefix, []).append(result)
    for child in children:
        child.join()
    column: Result = {}
    for prefix, wakes, per_wake in parts:
        results = got[prefix]
        latencies = sorted(x for r in results for x in r["latencies"])
        answers: Counter[str] = Counter()
        for r in results:
            answers.update(r["answers"])
        wall = max(r["wall"] for r in results)
        column[prefix] = {
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "claims_per_s": sum(answers.values()) / wall,
            "won": answers["claimed"],
            "fires": wakes * per_wake,
            "answers": dict(answers),
        }
    return column


def daemon_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def every_column(root: Path, state_db: str, daemons: int, jobs: int, seconds: float) -> Result:
    """(a) on `daemons` real daemons sharing `state_db`; lateness and CPU per fire."""
    folders = [root / f"daemon{n}" for n in range(daemons)]
    body = {
        "settings": {"timezone": "UTC", "state_db": state_db, "shutdown_grace_seconds": 60},
        "jobs": [
            {"id": f"every{i:04d}", "every": "1s", "integrationIDs": NOOP_CHAIN}
            for i in range(jobs)
        ],
    }
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "benchtasks.py").write_text(TASKS_MODULE)
        (folder / "config.json").write_text(json.dumps(body))
    config = load_config(folders[0] / "config.json")
    first = math.ceil(time.time()) + LEAD_SECONDS
    store = open_store(config.settings)
    store.save_job_states(
        {
            job.id: JobState(
                grid_of(config, job), datetime.fromtimestamp(first - 1 + i / jobs, UTC), None
            )
            for i, job in enumerate(config.jobs)
        }
    )
    store.close()
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--config", "config.json"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for folder in folders
    ]
    time.sleep(max(0.0, first - time.time()))
    late_start = any(p.poll() is not None for p in procs)
    cpu_before = sum(daemon_cpu(p.pid) for p in procs)
    time.sleep(max(0.0, first + seconds - time.time()))
    cpu = sum(daemon_cpu(p.pid) for p in procs) - cpu_before
    time.sleep(DRAIN_SECONDS)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(120)
    reader = open_store(config.settings, read_only=True)
    runs = reader.recent(limit=10_000_000)
    reader.close()
    fires = [
        (epoch(r["scheduled_for"]), epoch(r["started_at"]))
        for r in runs
        if r["status"] != "skipped" and r.get("scheduled_for")
    ]
    skipped = sum(r["status"] == "skipped" for r in runs)
    result = lateness_result(fires, first, first + seconds, cpu, skipped)
    slots = Counter(due for due, _ in fires if first <= due < first + seconds)
    result["doubled"] = sum(1 for n in slots.values() if n > 1)
    result["died_early"] = late_start
    return result


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base and not math.isnan(value) else "-"


def table(title: str, rows: list[tuple[str, list[float], str]], names: list[str]) -> None:
    """Rows of (label, value per column, format); ratios of each column to the first."""
    print(f"\n{title}")
    head = f"{'':30}" + "".join(f"{n:>14}" for n in names)
    head += "".join(f"{n + '/sqlite':>16}" for n in names[1:])
    print(head)
    for label, values, fmt in rows:
        cells = "".join(f"{format(v, fmt):>14}" for v in values)
        cells += "".join(f"{ratio(v, values[0]):>16}" for v in values[1:])
        print(f"{label:30}{cells}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    wakes, batch_wakes = (1000, 100) if args.quick else (5000, 500)
    jobs, seconds = (1000, 5.0) if args.quick else (1000, 20.0)
    parts = [("one", wakes, 1), ("batch", batch_wakes, 100)]
    cluster: Cluster = start_cluster()
    root = Path(tempfile.mkdtemp(prefix="bench-store-"))
    results: Result = {"claims": {}, "every": {}}
    try:
        results["claims"]["sqlite"] = claims_column(str(root / "claims.db"), 1, parts)
        for name, processes in (("pg", 1), ("pg x2", 2)):
            url = cluster.url(cluster.new_database(), PASSWORD)
            results["claims"][name] = claims_column(url, processes, parts)
        results["every"]["sqlite"] = every_column(
            root / "a-sqlite", str(root / "a-sqlite" / "poller.db"), 1, jobs, seconds
        )
        for name, daemons in (("pg", 1), ("pg x2", 2)):
            url = cluster.url(cluster.new_database(), PASSWORD)
            results["every"][name] = every_column(root / f"a-{name}", url, daemons, jobs, seconds)
    finally:
        cluster.stop()
    claims, every = results["claims"], results["every"]
    names = list(claims)
    table(
        f"Claims ({wakes:,} wakes of one fire, {batch_wakes:,} of 100)",
        [
            ("one-fire wake p50 (ms)", [claims[n]["one"]["p50_ms"] for n in names], ".3f"),
            ("one-fire wake p99 (ms)", [claims[n]["one"]["p99_ms"] for n in names], ".3f"),
            ("one-fire claims/s", [claims[n]["one"]["claims_per_s"] for n in names], ",.0f"),
            ("100-fire wake p50 (ms)", [claims[n]["batch"]["p50_ms"] for n in names], ".2f"),
            ("100-fire claims/s", [claims[n]["batch"]["claims_per_s"] for n in names], ",.0f"),
            ("fires won (of fires)", [claims[n]["one"]["won"] for n in names], ",d"),
        ],
        names,
    )
    table(
        f"Workload (a): {jobs:,} jobs every 1 s, {seconds:.0f} s window",
        [
            ("fires run in window", [every[n]["fires"] for n in names], ",d"),
            ("slots run twice", [every[n]["doubled"] for n in names], ",d"),
            ("lateness p50 (ms)", [every[n]["p50_ms"] for n in names], ".2f"),
            ("lateness p99 (ms)", [every[n]["p99_ms"] for n in names], ".2f"),
            ("lateness max (ms)", [every[n]["max_ms"] for n in names], ".1f"),
            ("skipped records", [every[n]["skipped"] for n in names], ",d"),
            ("CPU ms per fire (daemons)", [every[n]["cpu_ms_per_fire"] for n in names], ".3f"),
        ],
        names,
    )
    one = claims["pg"]["one"]["claims_per_s"]
    print(
        f"\nWhat bounds one database: here it takes {one:,.0f} one-fire claims/s from one "
        f"daemon, {claims['pg']['batch']['claims_per_s']:,.0f}/s in wakes of 100: at a claim "
        "per wake, that is the fires per second of all daemons together, whatever their "
        "number (a second daemon answers the same claims, `taken`)."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
