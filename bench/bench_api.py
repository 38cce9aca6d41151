"""Benchmark of the HTTP API (issue 5): /status and /jobs latency with 10,000 jobs and
1,000,000 run records, and the scheduler's fire lateness with and without API load.

    .venv/bin/python bench/bench_api.py                  # the full measure (~4 min)
    .venv/bin/python bench/bench_api.py --jobs 200 --runs 20000 --window 5   # a quick look
    .venv/bin/python bench/bench_api.py --folder DIR     # again on DIR's data, if it has any

It writes a config and a history into a folder, starts the real daemon (`python app.py`)
with the API on 127.0.0.1 (port 0), and measures request latency from this process. Then
it measures fire lateness (started_at - scheduled_for of `probe` jobs that fire every
second) in rounds of two windows (--rounds, 4): quiet; then while a second process (this
file with --load) sends GET /status and GET /jobs at a bounded rate (--rate, 20 req/s: many
open pages). Taking them in turns puts the machine's slow spells into both; the spread of
the quiet windows' p99 is printed as the noise. A last window has the second process send
as fast as it is answered (the API saturated). Every request goes to
127.0.0.1 only; each load is bounded in time and count. It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from poller.api.context import SHARED_SECONDS  # noqa: E402

API_KEY = "bench-api-key"  # every data endpoint needs one (README, Security)
from poller.store import JobState, SqliteStore  # noqa: E402
from poller.store.migrate import RECORD_VERSION  # noqa: E402
from poller.timeformat import column  # noqa: E402

PROBES = 50
"""every-1s jobs whose fires are measured, staggered over each second (one every 20 ms)."""
LOAD_MAX_REQUESTS = 200_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="per endpoint, sequential")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per lateness window")
    parser.add_argument("--rounds", type=int, default=4, help="quiet+loaded window pairs")
    parser.add_argument("--concurrency", type=int, default=4, help="threads of the load process")
    parser.add_argument("--rate", type=float, default=20.0, help="bounded load, requests/s")
    parser.add_argument("--folder", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        return run_load(args.load, args.window, args.concurrency, args.rate)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="poller-bench-api-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"folder: {folder}")
    db_path = folder / "data" / "poller.db"
    job_ids = write_config(folder, args.jobs)
    if db_path.exists():
        print(f"history: reusing {db_path}")
    else:
        began = time.monotonic()
        fill_history(db_path, job_ids, args.runs)
        took = time.monotonic() - began
        print(f"history: {args.runs:,} runs of {len(job_ids):,} jobs in {took:.1f}s")
    stagger_probes(folder, db_path)
    daemon, url = start_daemon(folder)
    try:
        measure_latency(url, job_ids, args.requests)
        measure_lateness(folder, url, args.window, args.rounds, args.concurrency, args.rate)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    return 0


def write_config(folder: Path, jobs: int) -> list[str]:
    (folder / "steps.py").write_text("def tick(data, context):\n    return {'tick': True}\n")
    job_ids = [f"job-{i:05d}" for i in range(jobs)]
    entries: list[dict[str, Any]] = [
        {"id": job_id, "every": "1h", "integrationIDs": [[{"function": "steps:tick"}]]}
        for job_id in job_ids
    ]
    entries += [
        {"id": f"probe-{i}", "every": "1s", "integrationIDs": [[{"function": "steps:tick"}]]}
        for i in range(PROBES)
    ]
    config = {
        "settings": {
            "api": {"enabled": True, "host": "127.0.0.1", "port": 0, "api_key": API_KEY},
            "history_max_runs_per_job": 100_000,
        },
        "jobs": entries,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return job_ids


def fill_history(db_path: Path, job_ids: list[str], runs: int) -> None:
    """Insert run records as the daemon writes them, in one transaction."""
    SqliteStore(db_path).close()  # the schema
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    now = datetime.now(UTC)
    rng = random.Random(5)
    per_job = max(runs // len(job_ids), 1)
    db.execute("BEGIN")
    batch: list[tuple[Any, ...]] = []
    for n in range(runs):
        job_id = job_ids[n // per_job % len(job_ids)]
        started = now - timedelta(days=20) + timedelta(seconds=n * 1.7)
        status = rng.choices(["success", "failed", "skipped"], [90, 7, 3])[0]
        run_id = f"bench-{n:08d}"
        record = {
            "run_id": run_id,
            "job_id": job_id,
            "trigger": "schedule",
            "scheduled_for": started.isoformat(),
            "started_at": started.isoformat(),
            "finished_at": (started + timedelta(milliseconds=40)).isoformat(),
            "status": status,
            "reason": "HTTP 503" if status == "failed" else None,
            "steps": [
                {
                    "id": "function:steps:tick",
                    "step": 0,
                    "entry": 0,
                    "status": "success" if status != "skipped" else "skipped",
                    "attempts": 1,
                    "duration_ms": 40,
                    "error": None,
                    "reason": None,
                }
            ],
            "output": {"tick": True},
        }
        text = json.dumps(record, separators=(",", ":"))
        batch.append(
            (
                run_id,
                job_id,
                "schedule",
                column(started),
                column(started),
                status,
                RECORD_VERSION,
                text,
            )
        )
        if len(batch) == 20_000:
            db.executemany("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
            batch.clear()
    db.executemany("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
    db.execute("COMMIT")
    db.close()


def stagger_probes(folder: Path, db_path: Path) -> None:
    """Spread the probes' fires over each second, as (a) of bench_scheduler does.

    `every` counts from the daemon's start, so all probes would fire at the same instant
    and the last of them would wait for the others to be handed off.
    """
    from poller.config.load import load_config
    from poller.plans import grid_of

    config = load_config(folder / "config.json")
    first = datetime.now(UTC).replace(microsecond=0)
    store = SqliteStore(db_path)
    try:
        store.save_job_states(
            {
                job.id: JobState(grid_of(config, job), first + timedelta(seconds=i / PROBES), None)
                for i, job in enumerate(j for j in config.jobs if j.id.startswith("probe-"))
            }
        )
    finally:
        store.close()


def start_daemon(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = folder / "logs" / "logfile.log"
    began = time.monotonic()
    daemon = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--config", str(folder / "config.json")],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "stderr.txt", "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        found = re.findall(r"API listening on (http://\S+)", text)
        if found:
            url = found[-1]
            try:
                if requests.get(url + "/health", timeout=5).status_code == 200:
                    print(f"daemon: up in {time.monotonic() - began:.1f}s at {url}")
                    return daemon, url
            except requests.RequestException:
                pass
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited: {(folder / 'stderr.txt').read_text()}")
        time.sleep(0.2)
    daemon.kill()
    raise SystemExit("the daemon did not start in 300 s")


def quantile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "no samples"
    p50, p99, most = (
        1000 * value for value in (quantile(ordered, 0.5), quantile(ordered, 0.99), ordered[-1])
    )
    return f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {most:7.1f} ms  (n={len(ordered)})"


def ratios(loaded: list[float], quiet: list[float]) -> str:
    if not loaded or not quiet:
        return "no ratio"
    a, b = sorted(loaded), sorted(quiet)
    p50 = quantile(a, 0.5) / quantile(b, 0.5)
    return f"vs quiet: p50 {p50:.2f}x, p99 {quantile(a, 0.99) / quantile(b, 0.99):.2f}x"


def measure_latency(url: str, job_ids: list[str], count: int) -> None:
    """Sequential requests. GET /status and GET /jobs are measured twice: computed, and as
    answered from the response identical requests share for SHARED_SECONDS."""
    session = requests.Session()
    session.headers["X-API-Key"] = API_KEY
    one = job_ids[len(job_ids) // 2]
    pages = [f"/jobs?offset={offset}" for offset in range(0, len(job_ids), 100)]
    spaced, pause = max(count // 10, 5), SHARED_SECONDS + 0.05
    targets: list[tuple[str, list[str], int, float]] = [  # name, paths in turn, count, pause
        ("GET /status, computed", ["/status"], spaced, pause),
        ("GET /status, shared", ["/status"], count, 0.0),
        # Through the pages in turn while they are many; else one request a pause apart.
        ("GET /jobs, computed", pages, *((count, 0.0) if len(pages) > 50 else (spaced, pause))),
        ("GET /jobs, shared", ["/jobs"], count, 0.0),
        ("GET /jobs?limit=1000", ["/jobs?limit=1000"], spaced, pause),
        ("GET /jobs/{id}", [f"/jobs/{one}"], count, 0.0),
        ("GET /jobs/{id}/runs", [f"/jobs/{one}/runs?limit=20"], count, 0.0),
        ("GET /metrics", ["/metrics"], count, 0.0),
        ("GET /health", ["/health"], count, 0.0),
    ]
    print(
        "\nlatency, sequential requests from one client (/jobs pages: 100 jobs; computed ones "
        f"come {pause:g} s apart, or go through the {len(pages)} pages in turn):"
    )
    for name, paths, rounds, pause in targets:
        samples = []
        for n in range(rounds):
            path = paths[n % len(paths)]
            began = time.perf_counter()
            response = session.get(url + path, timeout=60)
            samples.append(time.perf_counter() - began)
            if response.status_code != 200:
                raise SystemExit(f"{path}: HTTP {response.status_code} {response.text[:200]}")
            time.sleep(pause)
        print(f"  {name:<26} {percentiles(samples)}")


def measure_lateness(
    folder: Path, url: str, window: float, rounds: int, concurrency: int, rate: float
) -> None:
    """Quiet and loaded windows taken in turns, so a slow spell of the machine hits both.

    The spread between quiet windows is the noise a loaded ratio must be read against.
    """
    db = folder / "data" / "poller.db"
    print(
        f"\nfire lateness of {PROBES} every-1s probe jobs (run started_at - scheduled_for), "
        f"{rounds} rounds of a {window:g} s quiet window, then one at {rate:g} req/s:"
    )
    quiet: list[list[float]] = []
    loaded: list[list[float]] = []
    label = f"{rate:g} req/s"
    for number in range(1, rounds + 1):
        start = datetime.now(UTC)
        time.sleep(window)
        quiet.append(lateness(db, start, datetime.now(UTC)))
        print(f"  round {number} {'quiet':<17} {percentiles(quiet[-1])}")
        loaded.append(loaded_window(db, url, window, concurrency, rate))
        print(
            f"  round {number} {rate:g} req/s{'':<{10 - len(f'{rate:g}')}}{percentiles(loaded[-1])}"
        )
    all_quiet = [value for values in quiet for value in values]
    all_loaded = [value for values in loaded for value in values]
    print(f"  all quiet windows       {percentiles(all_quiet)}")
    print(f"  all {label + ' windows':<19} {percentiles(all_loaded)}")
    print(f"    loaded {ratios(all_loaded, all_quiet)}")
    p99s = [quantile(sorted(values), 0.99) for values in quiet if values]
    if len(p99s) > 1 and min(p99s) > 0:
        print(f"    noise: the quiet windows' p99 range {max(p99s) / min(p99s):.2f}x, max/min")
    flat = loaded_window(db, url, window, concurrency, 0.0)
    print(f"  flat out                {percentiles(flat)}")
    print(f"    flat out {ratios(flat, all_quiet)}")


def loaded_window(db: Path, url: str, window: float, concurrency: int, rate: float) -> list[float]:
    """Lateness while a second process loads the API for `window` seconds (rate 0: flat out)."""
    start = datetime.now(UTC)
    load = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            url,
            "--window",
            str(window),
            "--concurrency",
            str(concurrency),
            "--rate",
            str(rate),
        ],
        capture_output=True,
        text=True,
        timeout=window + 120,
        check=True,
    )
    print(f"    the load: {load.stdout.strip()}")
    return lateness(db, start, datetime.now(UTC))


def lateness(db_path: Path, start: datetime, end: datetime) -> list[float]:
    store = SqliteStore(db_path)
    try:
        runs = [
            run
            for i in range(PROBES)
            for run in store.recent(f"probe-{i}", 10_000)
            if run.get("scheduled_for") and run["status"] != "skipped"
        ]
    finally:
        store.close()
    values = []
    for run in runs:
        planned = datetime.fromisoformat(run["scheduled_for"])
        if start <= planned < end:
            values.append((datetime.fromisoformat(run["started_at"]) - planned).total_seconds())
    return values


def run_load(url: str, seconds: float, concurrency: int, rate: float) -> int:
    """The second process: GET /status and /jobs alternately from a few threads, at `rate`
    requests per second in all (0: as fast as they answer), bounded in time and count."""
    deadline = time.monotonic() + seconds
    interval = concurrency / rate if rate > 0 else 0.0
    done: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker(index: int) -> None:
        session = requests.Session()
        session.headers["X-API-Key"] = API_KEY
        paths = ["/status", "/jobs"]
        n = index
        next_at = time.monotonic() + interval * index / concurrency
        while time.monotonic() < deadline and len(done) < LOAD_MAX_REQUESTS:
            if interval:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
            began = time.perf_counter()
            try:
                ok = session.get(url + paths[n % 2], timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            with lock:
                done.append(time.perf_counter() - began)
                errors[0] += not ok
            n += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(
        f"{len(done)} requests from {concurrency} threads ({len(done) / seconds:.0f}/s), "
        f"{errors[0]} errors, median {statistics.median(done) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
