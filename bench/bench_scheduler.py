"""Issue 4's benchmark: the same workloads on Poller, a plain `schedule` loop and APScheduler 3.

Runs every (scheduler, workload) pair in its own child process (bench/workloads.py), one after
another, then prints one table with Poller's ratios and the issue's goals. It measures; it
asserts nothing. Usage: .venv/bin/python bench/bench_scheduler.py [--quick] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCHEDULERS = ("poller", "schedule", "schedule-idle", "apscheduler", "apscheduler-recorded")
SHORT = {"schedule-idle": "sch-idle", "apscheduler-recorded": "aps-rec"}
"""Column titles of the ratios."""
ONLY = {"apscheduler-recorded": ("a",)}
"""Schedulers that run only some workloads."""
WORKLOADS = ("a", "b", "c")
CALL_SECONDS = 0.5
"""(b): how long the local endpoint takes to answer."""

Result = dict[str, Any]
Results = dict[tuple[str, str], Result]


@dataclass(frozen=True, slots=True)
class Sizes:
    every_jobs: int = 1000
    every_seconds: float = 20.0
    burst_jobs: int = 200
    burst_workers: int = 8
    daily_jobs: int = 10_000
    idle_seconds: float = 20.0

    @property
    def burst_goal_s(self) -> float:
        return 1.2 * self.burst_jobs / self.burst_workers * CALL_SECONDS


FULL = Sizes()
QUICK = Sizes(every_seconds=5.0, burst_jobs=40, idle_seconds=5.0)


@dataclass(frozen=True, slots=True)
class Row:
    """One metric of the table: where it is in a result, how to print it, Poller's goal."""

    workload: str
    label: str
    key: str
    fmt: str
    goal: Callable[[Results, Sizes], tuple[str, bool | None]] | None = None
    ratio: bool = True


def value(results: Results, scheduler: str, workload: str, key: str) -> float | None:
    found = results.get((scheduler, workload), {}).get(key)
    return None if found is None or (isinstance(found, float) and math.isnan(found)) else found


def at_most_aps(key: str, unit: str) -> Callable[[Results, Sizes], tuple[str, bool | None]]:
    def goal(results: Results, sizes: Sizes) -> tuple[str, bool | None]:
        mine, theirs = value(results, "poller", "a", key), value(results, "apscheduler", "a", key)
        if theirs is None:
            return "<= apscheduler (not run)", None
        return f"<= apscheduler ({theirs:.3g} {unit})", None if mine is None else mine <= theirs

    return goal


def goal_no_drift(results: Results, sizes: Sizes) -> tuple[str, bool | None]:
    expected = round(sizes.every_jobs * sizes.every_seconds)
    fires = value(results, "poller", "a", "fires")
    return f"= {expected:,} (no drift)", None if fires is None else fires == expected


def goal_all_ran(results: Results, sizes: Sizes) -> tuple[str, bool | None]:
    ran = value(results, "poller", "b", "calls")
    return f"= {sizes.burst_jobs}", None if ran is None else ran == sizes.burst_jobs


def goal_burst_time(results: Results, sizes: Sizes) -> tuple[str, bool | None]:
    last = value(results, "poller", "b", "last_s")
    return f"<= {sizes.burst_goal_s:.1f} s", None if last is None else last <= sizes.burst_goal_s


def at_most(
    key: str, limit: float, unit: str
) -> Callable[[Results, Sizes], tuple[str, bool | None]]:
    """A fixed goal of (c)."""

    def goal(results: Results, sizes: Sizes) -> tuple[str, bool | None]:
        mine = value(results, "poller", "c", key)
        return f"<= {limit:g} {unit}", None if mine is None else mine <= limit

    return goal


ROWS = (
    Row("a", "fires in window", "fires", "{:,.0f}", goal_no_drift),
    Row("a", "lateness p50 ms", "p50_ms", "{:.2f}"),
    Row("a", "lateness p99 ms", "p99_ms", "{:.2f}", at_most_aps("p99_ms", "ms")),
    Row("a", "lateness max ms", "max_ms", "{:.1f}"),
    Row("a", "skipped/missed fires", "skipped", "{:,.0f}", ratio=False),
    Row("a", "CPU s in window", "cpu_s", "{:.2f}"),
    Row("a", "CPU ms per fire", "cpu_ms_per_fire", "{:.3f}", at_most_aps("cpu_ms_per_fire", "ms")),
    Row("b", "worker threads", "workers", "{:.0f}", ratio=False),
    Row("b", "calls the server got", "calls", "{:.0f}", goal_all_ran),
    Row("b", "last finished, s after due", "last_s", "{:.2f}", goal_burst_time),
    Row("c", "time to schedule all, s", "schedule_s", "{:.3f}", at_most("schedule_s", 1, "s")),
    Row("c", "RSS growth MiB", "rss_mib", "{:.1f}"),
    Row("c", "RSS KiB per job", "kib_per_job", "{:.2f}", at_most("kib_per_job", 3, "KiB")),
    Row("c", "idle CPU s per 20 s", "idle_cpu_s", "{:.4f}", at_most("idle_cpu_s", 0.01, "s")),
)


# --- running ------------------------------------------------------------------------------


def run_child(scheduler: str, workload: str, params: dict[str, Any], timeout: float) -> Result:
    command = [sys.executable, str(BENCH / "workloads.py"), scheduler, workload, json.dumps(params)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f}s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-800:]}"}
    result: Result = json.loads(lines[-1])
    return result


def run_all(
    schedulers: list[str], workloads: list[str], sizes: Sizes, profile_dir: Path | None
) -> Results:
    from tests.platform import Behaviour, PlatformServer

    results: Results = {}
    with PlatformServer() as server:
        for workload in workloads:
            for scheduler in schedulers:
                if workload not in ONLY.get(scheduler, WORKLOADS):
                    continue
                server.reset()
                server.script("slow", Behaviour(delay_seconds=CALL_SECONDS, times=None))
                with tempfile.TemporaryDirectory(prefix="poller-bench-") as folder:
                    params = workload_params(workload, sizes, Path(folder), server.url)
                    if profile_dir is not None and scheduler == "poller":
                        params["profile"] = str(profile_dir / f"poller-{workload}.pstats")
                    timeout = 180 + sizes.every_seconds + sizes.idle_seconds
                    began = time.monotonic()
                    result = run_child(scheduler, workload, params, timeout)
                if workload == "b":
                    result["calls"] = len(server.calls("slow"))
                results[scheduler, workload] = result
                print(
                    f"({workload}) {scheduler}: {time.monotonic() - began:.0f}s {result}",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def workload_params(workload: str, sizes: Sizes, folder: Path, url: str) -> dict[str, Any]:
    if workload == "a":
        return {"jobs": sizes.every_jobs, "duration": sizes.every_seconds, "folder": str(folder)}
    if workload == "b":
        return {
            "jobs": sizes.burst_jobs,
            "workers": sizes.burst_workers,
            "url": url,
            "timeout": 120,
            "folder": str(folder),
        }
    import poller_runs

    config = poller_runs.daily_config(folder, sizes.daily_jobs)  # for Poller; others ignore it
    return {"jobs": sizes.daily_jobs, "duration": sizes.idle_seconds, "config": str(config)}


# --- the table ----------------------------------------------------------------------------


def render(results: Results, schedulers: list[str], sizes: Sizes) -> str:
    titles = {
        "a": f"(a) {sizes.every_jobs:,} jobs every 1 s, {sizes.every_seconds:g} s",
        "b": f"(b) {sizes.burst_jobs} jobs at once, {CALL_SECONDS} s call each",
        "c": f"(c) {sizes.daily_jobs:,} daily jobs, idle {sizes.idle_seconds:g} s",
    }
    others = [s for s in schedulers if s != "poller"]
    header = ["workload", "metric", *schedulers]
    if "poller" in schedulers:
        header += [f"poller/{SHORT.get(name, name)}" for name in others]
        header += ["poller goal", "met"]
    lines: list[list[str]] = [header]
    workloads = {w for _, w in results}
    for row in ROWS:
        if row.workload not in workloads:
            continue
        cells = [titles[row.workload], row.label]
        for scheduler in schedulers:
            found = value(results, scheduler, row.workload, row.key)
            cells.append("-" if found is None else row.fmt.format(found))
        if "poller" in schedulers:
            mine = value(results, "poller", row.workload, row.key)
            for other in others:
                theirs = value(results, other, row.workload, row.key)
                ok = row.ratio and mine is not None and theirs
                cells.append(f"{mine / theirs:.2f}x" if ok else "")  # type: ignore[operator]
            text, met = row.goal(results, sizes) if row.goal else ("", None)
            cells += [text, "" if met is None else ("yes" if met else "NO")]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append(
            " | ".join(
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            out.append("-+-".join("-" * width for width in widths))
    return "\n".join(out)


def notes(results: Results) -> list[str]:
    found = [
        "schedule: the module's default scheduler; README loop = run_pending(); sleep(1); "
        "schedule-idle sleeps idle_seconds(). In (b) both hand jobs to 8 worker threads "
        "through a queue (schedule's docs, 'parallel execution').",
        "apscheduler: BackgroundScheduler() with defaults (thread pool of 10, "
        "misfire_grace_time 1 s, coalesce); (a) lateness = job start - scheduled_run_time.",
        "apscheduler-recorded: (a) only; the same, with a job that writes what Poller writes "
        "per fire: one INFO line to a log file and one run row committed to SQLite (WAL).",
        "poller: the real app.run_daemon in a child process, default settings (log file at "
        "INFO, SQLite history); lateness = run started_at - scheduled_for from the history.",
    ]
    for (scheduler, workload), result in sorted(results.items()):
        by_thread = result.get("thread_ms_per_fire") or {}
        if by_thread:
            parts = sorted(by_thread.items(), key=lambda item: -item[1])
            shown = ", ".join(f"{name} {ms:.3f}" for name, ms in parts if ms >= 0.001)
            found.append(f"({workload}) {scheduler}: CPU ms per fire by thread: {shown}")
        if "error" in result:
            found.append(f"({workload}) {scheduler} failed: {result['error']}")
        if result.get("late_start"):
            found.append(f"({workload}) {scheduler} was not ready by the first fire")
    return found


def print_profiles(profile_dir: Path) -> None:
    import pstats

    for path in sorted(profile_dir.glob("*.pstats")):
        print(f"\n=== profile {path.name}: CPU time of all threads, inflated by cProfile ===")
        stats = pstats.Stats(str(path))
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(r"poller/|app\.py|lookup\.py", 30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke run")
    parser.add_argument("--schedulers", default=",".join(SCHEDULERS), help="comma-separated")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: a,b,c")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw results here")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="profile Poller's runs (skews its numbers)"
    )
    args = parser.parse_args(argv)
    schedulers = [s for s in args.schedulers.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(schedulers) - set(SCHEDULERS) | set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown scheduler or workload: {', '.join(unknown)}")
    sizes = QUICK if args.quick else FULL
    sys.path[:0] = [str(ROOT), str(BENCH)]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    results = run_all(schedulers, workloads, sizes, args.profile)
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}; "
        f"schedule {version('schedule')}, APScheduler {version('apscheduler')}; "
        f"{'quick' if args.quick else 'full'} run in {time.monotonic() - began:.0f} s\n"
    )
    print(render(results, schedulers, sizes))
    print()
    for note in notes(results):
        print(f"- {note}")
    if args.json:
        args.json.write_text(json.dumps({f"{s}/{w}": r for (s, w), r in results.items()}, indent=2))
    if args.profile:
        print_profiles(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
