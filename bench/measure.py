"""Measuring helpers shared by the benchmark's child runs: CPU, RSS, lateness, waiting.

Nothing here starts a scheduler; poller_runs.py and library_runs.py do.
"""

from __future__ import annotations

import cProfile
import json
import math
import os
import pstats
import resource
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

ROOT = Path(__file__).resolve().parent.parent
LEAD_SECONDS = 4.0
"""From the end of set-up to the first fire: room for the scheduler to start."""
DRAIN_SECONDS = 2.0
"""After the window, before results are read: late fires of the window still get counted."""
SETTLE_SECONDS = 1.0
"""(c): after all jobs are scheduled, before the idle window starts."""
TASKS_MODULE = "def fire(data, context):\n    return None\n"
NOOP_CHAIN = [[{"function": "benchtasks:fire"}]]
"""The chain of (a) and (c) jobs: one function step that does nothing."""
DAILY_STRIDE = 7919
"""(c): a prime, so daily job i gets an assorted HH:MM."""

Result = dict[str, Any]
Params = dict[str, Any]


# --- measuring --------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def sleep_until(instant: float) -> None:
    while (left := instant - time.time()) > 0:
        time.sleep(left)


def cpu_between(start: float, end: float) -> float:
    """CPU seconds this process spends between two wall-clock instants."""
    sleep_until(start)
    before = cpu_seconds()
    sleep_until(end)
    return cpu_seconds() - before


def thread_cpu() -> dict[str, float]:
    """User + system CPU seconds of this process's threads, summed by name without the number
    (so the pool threads `run_0`, `run_1`... count as `run`)."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = names.get(int(task.name), "other").rstrip("0123456789_-") or "other"
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return found


def thread_cpu_between(start: float, end: float) -> tuple[float, dict[str, float]]:
    """As cpu_between, with the CPU seconds of each kind of thread (thread_cpu)."""
    sleep_until(start)
    before, threads_before = cpu_seconds(), thread_cpu()
    sleep_until(end)
    after, threads_after = cpu_seconds(), thread_cpu()
    spent = {
        name: seconds - threads_before.get(name, 0.0) for name, seconds in threads_after.items()
    }
    return after - before, {name: seconds for name, seconds in spent.items() if seconds > 0}


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values; NaN when empty."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def lateness_result(
    fires: list[tuple[float, float]],
    start: float,
    end: float,
    cpu: float,
    skipped: int,
    threads: dict[str, float] | None = None,
) -> Result:
    """(a): fires are (due, started) epochs; those due in [start, end) count.

    `threads`: CPU seconds by kind of thread (thread_cpu_between), when measured.
    """
    late = sorted(started - due for due, started in fires if start <= due < end)
    count = len(late)
    return {
        "fires": count,
        "p50_ms": percentile(late, 0.50) * 1000,
        "p99_ms": percentile(late, 0.99) * 1000,
        "max_ms": late[-1] * 1000 if late else math.nan,
        "skipped": skipped,
        "cpu_s": cpu,
        "cpu_ms_per_fire": cpu / count * 1000 if count else math.nan,
        "thread_ms_per_fire": {
            name: seconds / count * 1000 for name, seconds in (threads or {}).items() if count
        },
    }


def daily_times(count: int) -> list[str]:
    """(c): assorted local "HH:MM" times, none in the next 10 minutes (so none fires)."""
    now = datetime.now()
    first = now.hour * 60 + now.minute + 10
    minutes = [(first + (i * DAILY_STRIDE) % 1420) % 1440 for i in range(count)]
    return [f"{m // 60:02d}:{m % 60:02d}" for m in minutes]


def idle_result(
    scheduled_s: float, rss_before: int, jobs: int, idle_seconds: float, cpu: float
) -> Result:
    grown = rss_kib() - rss_before
    return {
        "schedule_s": scheduled_s,
        "rss_mib": grown / 1024,
        "kib_per_job": grown / jobs,
        "idle_cpu_s": cpu * 20 / idle_seconds,  # per 20 s, whatever the window
    }


def run_with_monitor(loop: Callable[[], None], monitor: Callable[[], Result]) -> NoReturn:
    """Run `loop` here; `monitor` measures in a thread, prints its result and ends the process."""

    def watch() -> None:
        try:
            result = monitor()
        except Exception as err:
            result = {"error": repr(err)}
        print(json.dumps(result), flush=True)
        os._exit(0)

    threading.Thread(target=watch, name="monitor", daemon=True).start()
    loop()
    raise RuntimeError("the loop returned")


T = TypeVar("T")


def profiled(run: Callable[[], T], path: Path | str) -> tuple[T, pstats.Stats]:
    """`run()` under cProfile in every thread, its merged stats written to `path`.

    Each thread's profile counts that thread's CPU time (time.thread_time), not waits.
    """
    profiles: list[cProfile.Profile] = []

    def start_thread_profile(frame: object, event: str, arg: object) -> None:
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()  # replaces this hook in the new thread

    threading.setprofile(start_thread_profile)
    main_profile = cProfile.Profile(time.thread_time)
    main_profile.enable()
    try:
        result = run()
    finally:
        main_profile.disable()
        threading.setprofile(None)
    stats = pstats.Stats(main_profile)
    for profile in profiles:
        stats.add(profile)
    stats.dump_stats(path)
    return result, stats
