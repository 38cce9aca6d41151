"""What the API shows: the daemon's jobs, schedule, health and history turned into response models.

Read-only, with secrets redacted. Runs are read through the API's own history connection, so
a slow query never holds the lock the scheduler loop writes through.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from poller.api.models import (
    ConfigFileOut,
    DaemonOut,
    FireOut,
    JobDetailOut,
    JobOut,
    LastExecution,
    NextRun,
    OutputOut,
    RunBrief,
    RunOut,
    StatusOut,
    StepCounts,
    WorkerOut,
)
from poller.config.models import Config, Job
from poller.redaction import Redactor
from poller.store import StoreError
from poller.timeformat import ms_between, parse_or_none, text
from poller.timing import NeverFiresError, blackout_reason, describe, zone_of

if TYPE_CHECKING:
    from poller.daemon import Daemon
    from poller.store import Store

log = logging.getLogger(__name__)

RECENT_RUNS = 12
"""Runs per job in /jobs (the page's bar of recent runs and the job's success rate)."""
NEXT_FIRES = 3
OUTPUT_CHARS = 4096
"""GET /jobs/{id} shows at most this many characters of the last run's output (as JSON)."""
CONFIG_PROBLEMS_SHOWN = 5
"""/status lists this many of an invalid config file's problems (and counts them all)."""
TOTALS_TTL_SECONDS = 2.0
CHEAP_COUNT_SECONDS = 0.01
"""A count this quick (a history of some thousands of runs) is made on every /status."""


class TotalsCache:
    """History run counts by status. Counting a million runs takes from 0.1 s to a second, so
    counts are served from here, counted again on a thread of their own once they are older
    than `ttl_seconds` (and than 20 times the last count's duration, so counting never takes
    more than a twentieth of a core); only the very first call waits. A history that counts
    in under CHEAP_COUNT_SECONDS is counted on every call instead, so the totals never lag
    the runs beside them (the header said 100% success just after a failure)."""

    def __init__(self, reader: Store, ttl_seconds: float = TOTALS_TTL_SECONDS) -> None:
        self.reader = reader
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._due_at = -math.inf
        self._counting = False
        self._totals: dict[str, int] | None = None
        self._cheap = False

    def __call__(self) -> dict[str, int]:
        with self._lock:
            if self._totals is None or self._cheap:
                self._totals = self._count()
            elif time.monotonic() >= self._due_at and not self._counting:
                self._counting = True
                threading.Thread(target=self._recount, name="api-totals", daemon=True).start()
            return dict(self._totals)

    def _recount(self) -> None:
        try:
            totals: dict[str, int] | None = self._count()
        except StoreError as err:  # closed at shutdown: keep the last counts
            log.warning("history totals not counted: %s", err)
            totals = None
        with self._lock:
            self._counting = False
            if totals is not None:
                self._totals = totals

    def _count(self) -> dict[str, int]:
        began = time.monotonic()
        totals = self.reader.totals()
        took = time.monotonic() - began
        self._cheap = took < CHEAP_COUNT_SECONDS
        self._due_at = time.monotonic() + max(self.ttl_seconds, 20 * took)
        return totals


def status(daemon: Daemon, reader: Store, totals: dict[str, int], config_path: Path) -> StatusOut:
    now = daemon.clock.now()
    config = daemon.config
    scheduled = dict(daemon.scheduler.by_id)
    next_run = None
    if scheduled:
        job_id, fire_job = min(scheduled.items(), key=lambda item: item[1].next_run)
        next_run = NextRun(job_id=job_id, at=fire_job.next_run)
    latest = reader.recent(None, 1)
    return StatusOut(
        scheduler_running=daemon.health(now)[0] == "healthy",
        started_at=daemon.started_at,
        uptime_seconds=round((now - daemon.started_at).total_seconds(), 3),
        next_run=next_run,
        jobs=len(config.jobs),
        jobs_enabled=sum(1 for job in config.jobs if job.enabled),
        jobs_scheduled=len(scheduled),
        inflight=daemon.inflight(),
        totals=totals,
        success_rate=_rate(totals.get("success", 0), totals.get("failed", 0)),
        last_execution=_last_execution(latest[0]) if latest else None,
        reloads=daemon.reloads["applied"],
        reload_errors=daemon.reloads["failed"],
        config_file=config_file(daemon, config_path),
        store="postgresql" if config.settings.is_shared_store else "sqlite",
        daemons=[DaemonOut.model_validate(row) for row in daemon.store.daemons()],
        executor=config.settings.executor.type,
        workers=[WorkerOut.model_validate(row) for row in daemon.executor.seen()],
    )


def config_file(daemon: Daemon, path: Path) -> ConfigFileOut:
    """Whether the file on disk is the config that runs, and if not, why."""
    since, problems = daemon.config_invalid or (None, ())
    return ConfigFileOut(
        path=str(path.absolute()),
        valid=daemon.config_invalid is None,
        invalid_since=since,
        problem_count=len(problems),
        problems=[daemon.redactor.text(problem) for problem in problems[:CONFIG_PROBLEMS_SHOWN]],
    )


def config_warning(daemon: Daemon, path: Path) -> str | None:
    """/health's one line for an invalid file on disk (the daemon stays healthy)."""
    if daemon.config_invalid is None:
        return None
    since, problems = daemon.config_invalid
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return (
        f"{path.absolute()} on disk is invalid since {text(since)} ({count}; `app.py check` lists "
        "them); the last good config is running"
    )


def job_out(daemon: Daemon, config: Config, job: Job, runs: list[dict[str, Any]]) -> JobOut:
    """A job as GET /jobs shows it; `runs` are its newest, newest first (Store.briefs)."""
    schedule = config.schedule(job)
    zone = zone_of(schedule)
    fires = [
        FireOut(at=fire.astimezone(zone), blackout=blackout_reason(job, fire, zone))
        for fire in planned_fires(daemon, job.id, NEXT_FIRES)
    ]
    recent = run_briefs(runs)
    statuses = [run.status for run in recent]
    mask = daemon.redactor.text  # a ${SECRET} may be written into any of these three
    return JobOut(
        id=mask(job.id),
        label=mask(job.label),
        description=mask(job.description),
        enabled=job.enabled,
        schedule=describe(schedule),
        timezone=zone.key,
        environment=config.environment_name(job),
        next_fire_at=fires[0].at if fires else None,
        next_fires=fires,
        running=daemon.running(job.id),
        last_run=recent[0] if recent else None,
        recent=recent,
        success_rate=_rate(statuses.count("success"), statuses.count("failed")),
    )


def job_detail(
    daemon: Daemon, reader: Store, config: Config, job: Job, redactor: Redactor
) -> JobDetailOut:
    summary = job_out(daemon, config, job, reader.briefs([job.id], RECENT_RUNS)[job.id])
    definition = job.model_dump(mode="json", by_alias=True, exclude_unset=True)
    definition = {"id": job.id, "label": job.label, **definition}
    environment = config.environments.get(summary.environment)
    detail = None
    if environment is not None:
        detail = redactor.value(environment.model_dump(mode="json"))
    return JobDetailOut(
        **summary.model_dump(),
        definition=redactor.value(definition),
        environment_detail=detail,
        last_output=last_output(reader, job.id, redactor),
    )


def last_output(reader: Store, job_id: str, redactor: Redactor) -> OutputOut | None:
    """The newest run record's output as indented JSON text, redacted, cut at OUTPUT_CHARS."""
    newest = reader.recent(job_id, 1)
    output = newest[0].get("output") if newest else None
    if output is None:
        return None
    # A cut text is no longer JSON, so the page shows text, never a parsed value.
    whole = json.dumps(redactor.value(output), indent=2, ensure_ascii=False, default=str)
    return OutputOut(
        text=whole[:OUTPUT_CHARS], is_cut=len(whole) > OUTPUT_CHARS, total_chars=len(whole)
    )


def planned_fires(daemon: Daemon, job_id: str, count: int) -> list[datetime]:
    """The scheduler's next fires of a job (aware UTC): its due instant, then each next one."""
    fire_job = daemon.scheduler.by_id.get(job_id)
    if fire_job is None or not fire_job.is_active:
        return []
    fires = [fire_job.next_run]
    while len(fires) < count:
        try:
            fires.append(fire_job.plan(fires[-1]))
        except NeverFiresError:
            break
    return fires


def run_out(record: dict[str, Any], redactor: Redactor) -> RunOut:
    record = redactor.value(record)
    return RunOut.model_validate({**record, "duration_ms": _duration_ms(record)})


def run_briefs(records: list[dict[str, Any]]) -> list[RunBrief]:
    """Briefs of runs (Store.briefs), checked in one call: /jobs makes a thousand."""
    return _BRIEFS.validate_python(
        [
            {
                "run_id": str(record.get("run_id", "")),
                "status": str(record.get("status", "")),
                "trigger": record.get("trigger"),
                "started_at": parse_or_none(record.get("started_at")),
                "duration_ms": record.get("duration_ms"),
                "dry_run": bool(record.get("dry_run")),
            }
            for record in records
        ]
    )


_BRIEFS = TypeAdapter(list[RunBrief])


def tail(path: Path, lines: int, redactor: Redactor, block: int = 64 * 1024) -> list[str]:
    """The last `lines` lines of a text file, read from its end."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; the file may not exist yet
    except FileNotFoundError:
        return []
    with handle:
        end = handle.seek(0, 2)
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= lines:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    text = data.decode("utf-8", errors="replace")
    return [redactor.text(line) for line in text.splitlines()[-lines:]]


def _last_execution(record: dict[str, Any]) -> LastExecution:
    steps = record.get("steps") or []
    counts = {name: 0 for name in ("success", "failed", "skipped")}
    for step in steps:
        if step.get("status") in counts:
            counts[step["status"]] += 1
    return LastExecution(
        run_id=str(record.get("run_id", "")),
        job_id=str(record.get("job_id", "")),
        status=str(record.get("status", "")),
        trigger=record.get("trigger"),
        started_at=record.get("started_at"),
        finished_at=record.get("finished_at"),
        duration_ms=_duration_ms(record),
        reason=record.get("reason"),
        steps=StepCounts(total=len(steps), **counts),
    )


def _duration_ms(record: dict[str, Any]) -> int | None:
    started = parse_or_none(record.get("started_at"))
    finished = parse_or_none(record.get("finished_at"))
    return None if started is None or finished is None else ms_between(started, finished)


def _rate(success: int, failed: int) -> float | None:
    return None if success + failed == 0 else round(success / (success + failed), 4)
