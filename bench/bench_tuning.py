"""What each process-wide knob of poller/tuning.py costs and gains, each measured off and on
in one run (every measure in a fresh child process), printed side by side as ratios.

    .venv/bin/python bench/bench_tuning.py                       # about a minute
    .venv/bin/python bench/bench_tuning.py --jobs 2000 --rounds 2  # a quick look

- log records: µs per logged line (the daemon's text format, to a file) with logging's
  default record fields, and without the thread, process and source-line fields.
- switch interval: how late a thread that sleeps 2 ms wakes while another thread runs
  Python flat out (an API view computing), at Python's 5 ms and at the daemon's interval.
  Its cost: seconds for two threads to run the same Python work at once.
- start-up: seconds to load a config of --jobs jobs and plan them, collecting as usual and
  inside `no_collection`.
- full collection: seconds of one full gc pass (it stops every thread, the loop too) with
  the started daemon's objects in it, and once they are frozen.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from poller import tuning  # noqa: E402

LOG_LINES = 50_000
WAKES = 400
SLEEP_SECONDS = 0.002


def log_line_us(is_lean: bool, folder: Path) -> float:
    from poller.logs import TextFormatter

    if is_lean:
        tuning.lean_log_records()
    handler = logging.FileHandler(folder / "bench.log")
    handler.setFormatter(TextFormatter())
    log = logging.getLogger("bench")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    extra = {"job_id": "job-1", "run_id": "run-1"}
    started = time.perf_counter()
    for n in range(LOG_LINES):
        log.info("run finished: %s in %d ms", "success", n, extra=extra)
    return (time.perf_counter() - started) / LOG_LINES * 1e6


def wake_lateness_ms(is_tuned: bool) -> dict[str, float]:
    if is_tuned:
        tuning.apply_for_daemon()
    stop = threading.Event()

    def busy() -> None:  # pure Python, as a view building a big answer
        total = 0
        while not stop.is_set():
            for n in range(1000):
                total += n * n

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    late = []
    for _ in range(WAKES):
        wanted = time.perf_counter() + SLEEP_SECONDS
        time.sleep(SLEEP_SECONDS)
        late.append((time.perf_counter() - wanted) * 1000)
    stop.set()
    thread.join()
    late.sort()
    return {"p50": statistics.median(late), "p99": late[int(len(late) * 0.99) - 1]}


def contended_work_seconds(is_tuned: bool) -> float:
    """Two threads running the same Python work at once: the GIL's hand-offs cost here."""
    if is_tuned:
        tuning.apply_for_daemon()

    def work() -> None:
        total = 0
        for n in range(3_000_000):
            total += n * n

    threads = [threading.Thread(target=work) for _ in range(2)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def write_config(folder: Path, jobs: int) -> Path:
    entries = [
        {"id": f"job-{i:05d}", "every": "1h", "integrationIDs": [["66c6eb17b4d36"]]}
        for i in range(jobs)
    ]
    config = {
        "settings": {"state_db": str(folder / "poller.db"), "log_file": str(folder / "l.log")},
        "environments": {"live": {"base_url": "http://127.0.0.1:9"}},
        "jobs": entries,
    }
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def started_daemon(config_path: Path) -> Any:
    from poller.clock import SystemClock
    from poller.config.load import load_config
    from poller.daemon import Daemon
    from poller.store import SqliteStore

    config = load_config(config_path)
    store = SqliteStore(Path(config.settings.state_db))
    store.acquire_daemon_lock()
    daemon = Daemon(config, store, SystemClock())
    daemon.start()
    return daemon


def startup_seconds(is_tuned: bool, folder: Path, jobs: int) -> float:
    path = write_config(folder, jobs)
    started = time.perf_counter()
    if is_tuned:
        with tuning.no_collection():
            daemon = started_daemon(path)
    else:
        daemon = started_daemon(path)
    seconds = time.perf_counter() - started
    daemon.stop(0)
    return seconds


def full_collection_seconds(is_tuned: bool, folder: Path, jobs: int) -> float:
    daemon = started_daemon(write_config(folder, jobs))
    if is_tuned:
        tuning.freeze_long_lived()
    passes = []
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        passes.append(time.perf_counter() - started)
    daemon.stop(0)
    return statistics.median(passes)


def child(measure: str, variant: str, jobs: int) -> Any:
    is_on = variant == "on"
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if measure == "log":
            return log_line_us(is_on, folder)
        if measure == "switch":
            return wake_lateness_ms(is_on)
        if measure == "contended":
            return contended_work_seconds(is_on)
        if measure == "startup":
            return startup_seconds(is_on, folder, jobs)
        return full_collection_seconds(is_on, folder, jobs)


def measure_in_child(measure: str, variant: str, jobs: int) -> Any:
    command = [sys.executable, __file__, "--child", measure, variant, "--jobs", str(jobs)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{measure} {variant} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _median(values: list[Any]) -> Any:
    if isinstance(values[0], dict):
        return {key: statistics.median(value[key] for value in values) for key in values[0]}
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="children per variant")
    parser.add_argument("--child", nargs=2, metavar=("MEASURE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.jobs)))
        return 0

    def alternated(measure: str, jobs: int) -> tuple[Any, Any]:
        """Medians of --rounds children each way, run off, on, off, on, … against drift."""
        runs: dict[str, list[Any]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for variant in ("off", "on"):
                runs[variant].append(measure_in_child(measure, variant, jobs))
        return tuple(_median(runs[variant]) for variant in ("off", "on"))  # type: ignore[return-value]

    rows = []
    off, on = alternated("log", args.jobs)
    rows.append(("log line, µs", "default fields", off, "lean_log_records", on))
    off, on = alternated("switch", 0)
    for key in ("p50", "p99"):
        rows.append((f"wake lateness {key}, ms", "5 ms interval", off[key], "1 ms", on[key]))
    off, on = alternated("contended", 0)
    rows.append(("2 busy threads, s", "5 ms interval", off, "1 ms", on))
    off, on = alternated("startup", args.jobs)
    rows.append((f"start-up, {args.jobs} jobs, s", "collecting", off, "no_collection", on))
    off, on = alternated("collect", args.jobs)
    rows.append(("full gc pass, s", "nothing frozen", off, "freeze_long_lived", on))
    print(f"medians of {args.rounds} alternated runs each")
    print(f"{'measure':<28} {'without':<16} {'':>9}   {'with':<18} {'':>9}   with/without")
    for name, off_label, off_value, on_label, on_value in rows:
        ratio = on_value / off_value if off_value else float("nan")
        print(
            f"{name:<28} {off_label:<16} {off_value:>9.4g}   {on_label:<18} {on_value:>9.4g}"
            f"   {ratio:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
