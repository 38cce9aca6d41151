"""`app.py jobs`: every job at a glance — id, schedule in words, next fire, last run.

Next fires are counted as `check` counts them (the stored anchors); the last run is the
newest record in the state database. Needs none of the daemon's secrets.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from poller import timeformat
from poller.commands.options import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigSource,
    load,
    open_history,
    say,
    shorten,
    store_error,
    table,
    when,
)
from poller.config.models import Config
from poller.errors import ConfigError
from poller.forecast import JobForecast, forecast
from poller.store import JobState, StoreError

SCHEDULE_CHARS = 40


def cmd_jobs(source: ConfigSource, args: argparse.Namespace) -> int:
    loaded = load(source, unset_ok=True)
    if isinstance(loaded, str):
        say(loaded)
        return EXIT_FAILED
    if isinstance(loaded, ConfigError):
        say(str(loaded))
        return EXIT_FAILED
    config = loaded
    try:
        anchors, last = stored_state(config)
    except StoreError as err:
        return store_error(err)
    items = forecast(config, datetime.now(UTC), 1, anchors)
    if args.json:
        print(json.dumps([entry(item, last.get(item.job.id)) for item in items], indent=2))
        return EXIT_OK
    if not items:
        print(f"{source.path}: no jobs yet")
        return EXIT_OK
    rows = [row(item, last.get(item.job.id)) for item in items]
    print("\n".join(table(["job", "schedule", "next fire", "last run"], rows)))
    return EXIT_OK


def stored_state(
    config: Config,
) -> tuple[dict[str, JobState], dict[str, dict[str, Any]]]:
    """The stored `every` anchors and each job's newest run in brief, in one open of the
    state database (neither before it exists)."""
    store = open_history(config.settings)
    if store is None:
        return {}, {}
    try:
        anchors = store.job_anchors()
        briefs = store.briefs([job.id for job in config.jobs], 1)
    finally:
        store.close()
    return anchors, {job_id: runs[0] for job_id, runs in briefs.items() if runs}


def row(item: JobForecast, last: dict[str, Any] | None) -> list[str]:
    if item.paused:
        upcoming = "paused"
    elif item.next_fires:
        fire = item.next_fires[0]
        upcoming = timeformat.text(fire)
        if item.blackouts[0]:
            upcoming += " (blackout: skipped)"
    else:
        upcoming = "never"
    ran = "no runs yet" if last is None else f"{last['status']} {when(last['started_at'])}"
    job_id = f"{item.job.id} (dry run)" if item.job.dry_run else item.job.id
    return [job_id, shorten(item.schedule, SCHEDULE_CHARS), upcoming, ran]


def entry(item: JobForecast, last: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": item.job.id,
        "label": item.job.label,
        "paused": item.paused,
        "schedule": item.schedule,
        "timezone": item.timezone,
        "next_fire": timeformat.text(item.next_fires[0]) if item.next_fires else None,
        "last_run": last,
    }
