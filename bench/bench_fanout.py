"""Benchmark of the for_each fan-out (issue 16): 200 items, each one HTTP call to a local
endpoint that answers after 50 ms, at max_parallel 1, 4 and 16, against the ideal and
against the same work as a plain concurrent.futures loop.

    .venv/bin/python bench/bench_fanout.py              # the full measure (~1.5 min)
    .venv/bin/python bench/bench_fanout.py --quick      # 50 items, 1 repeat (~10 s)
    .venv/bin/python bench/bench_fanout.py --items 400 --parallel 8,32 --repeats 5

Everything runs in this process. The endpoint is a ThreadingHTTPServer on 127.0.0.1 (port
0, HTTP/1.1 keep-alive) that sleeps --delay-ms per request and counts how many requests it
holds at once. Poller's side is a real config parsed by poller.config.load.parse_config, run
by poller.run.chain.run_job as the daemon's worker runs it (logging set up as the daemon's,
INFO to a file; the daemon's 1 ms switch interval): a `function` entry makes the items, then
a for_each whose sub-chain is one plain `http` GET per item. The other side is a
ThreadPoolExecutor(max_workers=max_parallel) doing requests.get per item, with a
requests.Session per worker thread (--session shared: one for all, as Poller's run has).
The two sides take turns in each repeat, so a slow spell of the machine falls on both; the
median of the repeats is shown. It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from measure import profiled  # noqa: E402

from poller import tuning  # noqa: E402
from poller.clock import SystemClock  # noqa: E402
from poller.config.load import parse_config  # noqa: E402
from poller.config.models import Config  # noqa: E402
from poller.logs import setup_logging  # noqa: E402
from poller.redaction import Redactor  # noqa: E402
from poller.run import chain  # noqa: E402
from poller.run.client import ClientPool  # noqa: E402

ITEMS_MODULE = """
def items(data, context):
    return {"items": [{"n": n} for n in range(data["count"])]}
"""
BODY = b'{"ok": true}'


class Endpoint:
    """A local endpoint that answers every GET after `delay_seconds`, and counts what it
    holds at once (the check that max_parallel is honoured)."""

    def __init__(self, delay_seconds: float) -> None:
        self.delay_seconds = delay_seconds
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0
        self.served = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real API answers
            # Headers and body go out in two writes: with Nagle's algorithm the body would
            # wait for the client's delayed ACK of the headers, 40 ms on Linux.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                with endpoint._lock:
                    endpoint._now += 1
                    endpoint.most = max(endpoint.most, endpoint._now)
                try:
                    time.sleep(endpoint.delay_seconds)
                finally:
                    with endpoint._lock:
                        endpoint._now -= 1
                        endpoint.served += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # 16 clients connecting at once must not wait on a SYN
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/item"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.most = self.served = 0

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True, slots=True)
class Measure:
    seconds: float
    most: int  # requests the endpoint held at once
    served: int  # requests it answered (more than the items: retries)
    failed: int  # items that failed
    fds_added: int  # file descriptors open after the run minus before


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def measured(endpoint: Endpoint, work: Callable[[], int]) -> Measure:
    """Time one run of `work`, which returns how many items failed."""
    endpoint.reset()
    fds = open_fds()
    began = time.perf_counter()
    failed = work()
    seconds = time.perf_counter() - began
    return Measure(seconds, endpoint.most, endpoint.served, failed, open_fds() - fds)


def fan_out_config(folder: Path, url: str, items: int, max_parallel: int) -> Config:
    """A one-job config: a function makes `items` items, a for_each calls `url` per item."""
    raw = {
        "jobs": [
            {
                "id": f"fan-{max_parallel}",
                "every": "1h",
                "input": {"count": items},
                "integrationIDs": [
                    [{"function": "fanout_items:items"}],
                    [
                        {
                            "for_each": "items",
                            "key": "n",
                            "max_parallel": max_parallel,
                            "steps": [[{"http": {"method": "GET", "url": url}}]],
                        }
                    ],
                ],
            }
        ]
    }
    return parse_config(json.dumps(raw), folder / "config.json")


def poller_run(config: Config, items: int) -> Callable[[], int]:
    """The job's one run, as the daemon's worker calls run_job; returns the failed items."""
    clock = SystemClock()
    clients = ClientPool(config.environments, clock, redactor=Redactor(config.secret_values()))
    job = config.jobs[0]
    seen_errors: set[str] = set()

    def run() -> int:
        result = chain.run_job(job, config, clients, clock=clock, trigger="schedule")
        if result.items_processed != items:
            raise SystemExit(f"Poller's run: {result.status} {result.reason}")
        if result.items_failed and result.errors[0] not in seen_errors:
            seen_errors.add(result.errors[0])
            failed = f"{result.items_failed} of {items} items failed"
            print(f"    Poller: {failed}, e.g. {result.errors[0]}")
        return result.items_failed

    return run


def futures_run(url: str, items: int, max_parallel: int, session: str) -> Callable[[], int]:
    """The same work as a plain loop: a pool of max_parallel threads, requests.get per item;
    returns the items whose call failed."""

    def run() -> int:
        local = threading.local()
        sessions: list[requests.Session] = [requests.Session()] if session == "shared" else []

        def call(n: int) -> bool:
            if session == "shared":
                chosen = sessions[0]
            elif hasattr(local, "session"):
                chosen = local.session
            else:
                chosen = local.session = requests.Session()
                sessions.append(chosen)  # list.append is atomic: no lock needed
            try:
                response = chosen.get(url, timeout=30)
                response.raise_for_status()
                response.json()
            except requests.RequestException:
                return False
            return True

        with ThreadPoolExecutor(max_workers=max_parallel) as pool:
            done = list(pool.map(call, range(items)))
        for each in sessions:
            each.close()
        return done.count(False)

    return run


def print_profile(run: Callable[[], int], path: Path) -> None:
    """Run once under cProfile in every thread (CPU time, time.thread_time); print the top."""
    _, stats = profiled(run, path)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, help="items per run (default 200; --quick 50)")
    parser.add_argument("--parallel", default="1,4,16", help="max_parallel values, comma-separated")
    parser.add_argument("--repeats", type=int, help="runs of each side per row (3; --quick 1)")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the endpoint's answer time")
    parser.add_argument("--session", choices=["per-thread", "shared"], default="per-thread")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="profile one Poller run per row"
    )
    args = parser.parse_args()
    items = args.items or (50 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 3)
    parallels = [int(value) for value in args.parallel.split(",")]
    delay = args.delay_ms / 1000

    folder = Path(tempfile.mkdtemp(prefix="poller-bench-fanout-"))
    (folder / "fanout_items.py").write_text(ITEMS_MODULE)
    # As the daemon runs: its log file at INFO (every line filtered and redacted), its
    # switch interval. The futures side runs in the same process, so it gets them too.
    setup_logging(folder / "logs" / "logfile.log", level="INFO", stderr=False)
    tuning.apply_for_daemon()
    endpoint = Endpoint(delay)
    print(f"folder: {folder}")
    print(
        f"{items} items, each one GET answered after {args.delay_ms:g} ms; {repeats} repeat(s), "
        f"median shown; futures: a requests.Session {args.session}; {os.cpu_count()} CPUs\n"
    )
    rows = []
    try:
        # Warm-up: the function module's import, first connections, requests' lazy imports.
        warm = fan_out_config(folder, endpoint.url, 8, 4)
        poller_run(warm, 8)()
        futures_run(endpoint.url, 8, 4, args.session)()
        for max_parallel in parallels:
            config = fan_out_config(folder, endpoint.url, items, max_parallel)
            sides = {
                "poller": poller_run(config, items),
                "futures": futures_run(endpoint.url, items, max_parallel, args.session),
            }
            taken: dict[str, list[Measure]] = {"poller": [], "futures": []}
            for _ in range(repeats):
                for name, run in sides.items():
                    taken[name].append(measured(endpoint, run))
            rows.append((max_parallel, taken))
            poller_s = statistics.median(m.seconds for m in taken["poller"])
            futures_s = statistics.median(m.seconds for m in taken["futures"])
            print(
                f"  max_parallel {max_parallel}: Poller {poller_s:.3f} s, futures {futures_s:.3f} s"
            )
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                print(f"\nprofile of one Poller run, max_parallel {max_parallel}:")
                print_profile(sides["poller"], args.profile / f"poller-{max_parallel}.prof")
    finally:
        endpoint.stop()
    print_table(rows, items, delay)
    return 0


def print_table(rows: list[tuple[int, dict[str, list[Measure]]]], items: int, delay: float) -> None:
    header = (
        f"{'max_parallel':>12} | {'ideal s':>7} | {'Poller s':>8} | {'futures s':>9} | "
        f"{'Poller/ideal':>12} | {'Poller/futures':>14} | {'at once P/f':>11} | "
        f"{'requests P/f':>12} | {'failed P/f':>10} | {'fds+ P/f':>9}"
    )
    print("\n" + header)
    print("-" * len(header))
    for max_parallel, taken in rows:
        ideal = items * delay / max_parallel
        p, f = (statistics.median(m.seconds for m in taken[side]) for side in ("poller", "futures"))
        print(
            f"{max_parallel:>12} | {ideal:>7.3f} | {p:>8.3f} | {f:>9.3f} | {p / ideal:>11.2f}x | "
            f"{p / f:>13.2f}x | {most_of(taken, 'most'):>11} | {most_of(taken, 'served'):>12} | "
            f"{most_of(taken, 'failed'):>10} | {most_of(taken, 'fds_added'):>9}"
        )
    print(
        "\ngoal: Poller/futures <= 1.20x. Seconds are medians of the repeats; the other "
        "columns the most of any repeat, per run: 'at once', the requests the endpoint held "
        "at once (max_parallel is honoured when it is no more than max_parallel); 'requests', "
        f"what it answered ({items} items: more are retries); 'failed', the items that "
        "failed; 'fds+', the file descriptors the process had open after the run minus "
        "before."
    )


def most_of(taken: dict[str, list[Measure]], name: str) -> str:
    """ "P/f": the largest of one Measure field over each side's repeats."""
    return "/".join(str(max(getattr(m, name) for m in taken[side])) for side in taken)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
