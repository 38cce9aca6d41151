"""The libraries' side of each workload: `schedule` as its README and docs show it, and
APScheduler 3.11's BackgroundScheduler with default settings.
"""

from __future__ import annotations

import contextlib
import gc
import math
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

from measure import (
    DRAIN_SECONDS,
    LEAD_SECONDS,
    SETTLE_SECONDS,
    Params,
    Result,
    cpu_between,
    cpu_seconds,
    daily_times,
    idle_result,
    lateness_result,
    rss_kib,
    run_with_monitor,
    sleep_until,
    thread_cpu_between,
)


def schedule_loop(idle: bool) -> Callable[[], None]:
    import schedule

    def readme_loop() -> None:
        while True:
            schedule.run_pending()
            time.sleep(1)

    def idle_loop() -> None:  # schedule's docs, "Time until the next execution"
        while True:
            n = schedule.idle_seconds()
            if n is None:
                time.sleep(1)
            elif n > 0:
                time.sleep(n)
            schedule.run_pending()

    return idle_loop if idle else readme_loop


def schedule_a(params: Params, idle: bool) -> NoReturn:
    import schedule

    count, duration = params["jobs"], params["duration"]
    first = math.ceil(time.time()) + LEAD_SECONDS
    fires: list[tuple[datetime, float]] = []

    def fire(job: schedule.Job) -> None:
        assert job.next_run is not None  # the due time; schedule plans the next after this
        fires.append((job.next_run, time.time()))

    for i in range(count):
        job = schedule.every(1).seconds
        job.do(fire, job)
        job.next_run = datetime.fromtimestamp(first + i / count)  # staggered start

    def monitor() -> Result:
        cpu = cpu_between(first, first + duration)
        sleep_until(first + duration + DRAIN_SECONDS)
        pairs = [(due.timestamp(), started) for due, started in list(fires)]
        return lateness_result(pairs, first, first + duration, cpu, 0)

    run_with_monitor(schedule_loop(idle), monitor)


def http_caller(url: str, finished: list[float], failed: list[str]) -> Callable[[], float]:
    import requests

    session = requests.Session()

    def call() -> float:
        try:
            session.post(url, json={}, timeout=30).raise_for_status()
        except requests.RequestException as err:
            failed.append(repr(err))
            raise
        finished.append(time.time())
        return time.time()

    return call


def schedule_b(params: Params, idle: bool) -> NoReturn:
    import schedule

    count, workers = params["jobs"], params["workers"]
    due = math.ceil(time.time()) + LEAD_SECONDS
    finished: list[float] = []
    failed: list[str] = []
    call = http_caller(params["url"] + "/integrations/slow/execute", finished, failed)
    # schedule runs jobs one by one on the loop thread; its docs' "parallel execution"
    # pattern hands them to worker threads through a queue.
    jobqueue: queue.Queue[Callable[[], object]] = queue.Queue()

    def worker_main() -> None:
        while True:
            job_func = jobqueue.get()
            with contextlib.suppress(Exception):  # counted in `failed`
                job_func()
            jobqueue.task_done()

    at = datetime.fromtimestamp(due).strftime("%H:%M:%S")
    for _ in range(count):
        schedule.every().day.at(at).do(jobqueue.put, call)
    for _ in range(workers):
        threading.Thread(target=worker_main, daemon=True).start()

    def monitor() -> Result:
        while len(finished) + len(failed) < count and time.time() < due + params["timeout"]:
            time.sleep(0.2)
        return {
            "ran": len(finished),
            "not_run": count - len(finished),
            "last_s": max(finished) - due if finished else math.nan,
            "workers": workers,
        }

    run_with_monitor(schedule_loop(idle), monitor)


def schedule_c(params: Params, idle: bool) -> NoReturn:
    import schedule

    count, window = params["jobs"], params["duration"]
    times = daily_times(count)
    gc.collect()
    rss_before, began = rss_kib(), time.perf_counter()
    for hhmm in times:
        schedule.every().day.at(hhmm).do(time.time)
    scheduled_s = time.perf_counter() - began

    def monitor() -> Result:
        time.sleep(SETTLE_SECONDS)
        before = cpu_seconds()
        time.sleep(window)
        return idle_result(scheduled_s, rss_before, count, window, cpu_seconds() - before)

    run_with_monitor(schedule_loop(idle), monitor)


# --- APScheduler 3.11 BackgroundScheduler, default settings --------------------------------


def apscheduler_a(params: Params) -> Result:
    return _apscheduler_every(params, time.time, with_id=False)


def apscheduler_recorded_a(params: Params) -> Result:
    """(a) with a job that leaves what Poller leaves per fire: a log line and a durable row.

    The row goes into SQLite (WAL, synchronous NORMAL, as Poller's history), one commit per
    run; the line goes to a log file through `logging`, at INFO.
    """
    import logging
    import sqlite3
    from pathlib import Path

    folder = Path(params["folder"])
    logger = logging.getLogger("bench.recorded")
    handler = logging.FileHandler(folder / "aps.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    db = sqlite3.connect(folder / "aps.db", check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE runs (job_id TEXT, started REAL, finished REAL, status TEXT)")
    lock = threading.Lock()

    def job(job_id: str) -> float:
        started = time.time()
        with lock:
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?)", (job_id, started, time.time(), "success")
            )
        logger.info("job %s: run finished: success", job_id)
        return started

    return _apscheduler_every(params, job, with_id=True)


def _apscheduler_every(params: Params, job: Callable[..., float], with_id: bool) -> Result:
    """(a) on APScheduler: `job` (given the job id when `with_id`) returns its start."""
    from apscheduler.events import (
        EVENT_JOB_EXECUTED,
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
        JobEvent,
    )
    from apscheduler.schedulers.background import BackgroundScheduler

    count, duration = params["jobs"], params["duration"]
    first = math.ceil(time.time()) + LEAD_SECONDS
    fires: list[tuple[datetime, float]] = []
    skipped: list[JobEvent] = []

    def listen(event: Any) -> None:
        if event.code == EVENT_JOB_EXECUTED:
            fires.append((event.scheduled_run_time, event.retval))
        else:
            skipped.append(event)

    scheduler = BackgroundScheduler()
    scheduler.add_listener(listen, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    for i in range(count):  # the job returns when it started
        start = datetime.fromtimestamp(first + i / count, UTC)
        scheduler.add_job(
            job,
            "interval",
            seconds=1,
            start_date=start,
            id=f"every{i}",
            args=[f"every{i}"] if with_id else None,
        )
    scheduler.start()
    cpu, threads = thread_cpu_between(first, first + duration)
    sleep_until(first + duration + DRAIN_SECONDS)
    pairs = [(due.timestamp(), started) for due, started in list(fires)]
    missed = sum(len(getattr(e, "scheduled_run_times", None) or [None]) for e in skipped)
    return lateness_result(pairs, first, first + duration, cpu, missed, threads)


def apscheduler_b(params: Params) -> Result:
    from apscheduler.events import EVENT_JOB_MISSED
    from apscheduler.schedulers.background import BackgroundScheduler

    count = params["jobs"]
    due = math.ceil(time.time()) + LEAD_SECONDS
    finished: list[float] = []
    failed: list[str] = []
    missed: list[object] = []
    call = http_caller(params["url"] + "/integrations/slow/execute", finished, failed)
    scheduler = BackgroundScheduler()
    scheduler.add_listener(missed.append, EVENT_JOB_MISSED)
    run_date = datetime.fromtimestamp(due, UTC)
    for i in range(count):
        scheduler.add_job(call, "date", run_date=run_date, id=f"call{i}")
    scheduler.start()
    while len(finished) + len(failed) + len(missed) < count:
        if time.time() > due + params["timeout"]:
            break
        time.sleep(0.2)
    return {
        "ran": len(finished),
        "not_run": count - len(finished),
        "missed": len(missed),
        "last_s": max(finished) - due if finished else math.nan,
        "workers": scheduler._lookup_executor("default")._pool._max_workers,
    }


def apscheduler_c(params: Params) -> Result:
    import apscheduler.triggers.cron  # noqa: F401 - loaded before the RSS baseline
    from apscheduler.schedulers.background import BackgroundScheduler

    count, window = params["jobs"], params["duration"]
    times = daily_times(count)
    gc.collect()
    rss_before, began = rss_kib(), time.perf_counter()
    scheduler = BackgroundScheduler()
    for i, hhmm in enumerate(times):
        hour, minute = hhmm.split(":")
        scheduler.add_job(time.time, "cron", hour=hour, minute=minute, id=f"daily{i}")
    scheduler.start()
    scheduled_s = time.perf_counter() - began
    time.sleep(SETTLE_SECONDS)
    before = cpu_seconds()
    time.sleep(window)
    return idle_result(scheduled_s, rss_before, count, window, cpu_seconds() - before)
