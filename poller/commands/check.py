"""`app.py check`: is the config valid and able to run here, and when does each job fire?

Every problem is listed at once: the file's own (poller.config.load), chain functions that
cannot be imported (importing them is what the daemon does at run time), and `${NAME}`
variables this shell does not set (the daemon needs them; `check` does not). Next fires
count from the daemon's stored anchors when the state database exists.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from poller import timeformat
from poller.commands.options import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigSource,
    load,
    open_history,
    say,
)
from poller.config.chain import FunctionEntry
from poller.config.jsonpos import Locations
from poller.config.load import config_warnings, read_text, render_path
from poller.config.models import Config
from poller.errors import ChainError, ConfigError, Problem
from poller.forecast import JobForecast, forecast
from poller.run.steps import load_function
from poller.store import JobState, StoreError
from poller.timing import local_zone


def cmd_check(source: ConfigSource, args: argparse.Namespace) -> int:
    loaded = load(source, unset_ok=True)
    if isinstance(loaded, str):
        say(loaded)
        return EXIT_FAILED
    if isinstance(loaded, ConfigError):
        if args.json:
            report = {"valid": False, "errors": [p.as_dict() for p in loaded.problems], "jobs": []}
            print(json.dumps(report, indent=2))
        else:
            print(loaded)
        return EXIT_FAILED
    config = loaded
    problems = sorted(
        [*config.unset, *function_problems(config, source)],
        key=lambda p: (p.line or 0, p.column or 0),
    )
    after = args.after or datetime.now(UTC)
    if after.tzinfo is None:
        zone = config.settings.timezone
        after = after.replace(tzinfo=local_zone() if zone is None else ZoneInfo(zone))
    anchors, state_note = stored_anchors(config)
    jobs = forecast(config, after, args.count, anchors)
    warnings = config_warnings(config)
    if args.json:
        report = {
            "valid": not problems,
            "errors": [p.as_dict() for p in problems],
            "warnings": warnings,
            "state": state_note,
            "jobs": [job.as_dict() for job in jobs],
        }
        print(json.dumps(report, indent=2))
        return EXIT_FAILED if problems else EXIT_OK
    count = f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}"
    if problems:
        print(f"{source.path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}, {count}")
        for problem in problems:
            print(f"  {problem.render()}")
        if config.unset:
            print("  (the daemon reads ${NAME} from its own environment; this is yours)")
    else:
        print(f"{source.path}: valid, {count}")
    print(f"fires counted as the daemon counts them: {state_note}")
    for item in jobs:
        print()
        print("\n".join(job_lines(item)))
    for warning in warnings:
        print(f"\nwarning: {warning}")
    return EXIT_FAILED if problems else EXIT_OK


def job_lines(item: JobForecast) -> list[str]:
    state = "paused: enabled is false" if item.paused else "enabled"
    lines = [
        f"{item.job.id}  ({item.job.label})  [{state}]",
        f"  schedule: {item.schedule}  [{item.timezone}]",
    ]
    if item.counted_from is not None:
        whence = "the stored anchor" if item.anchor_stored else "now: no anchor stored yet"
        lines.append(f"  counted from: {timeformat.text(item.counted_from)} ({whence})")
    if item.paused:
        lines.append("  next: none while paused")
    for fire, blackout in zip(item.next_fires, item.blackouts, strict=True):
        note = f"  (skipped: {blackout})" if blackout else ""
        lines.append(f"  next: {timeformat.text(fire)}{note}")
    return lines


def stored_anchors(config: Config) -> tuple[dict[str, JobState], str]:
    """The daemon's stored `every` anchors, and a sentence saying where they came from."""
    where = config.settings.state_db
    try:
        store = open_history(config.settings)
        if store is None:
            return {}, f"no state database yet at {where}: `every` jobs count from now"
        try:
            return store.job_anchors(), f"`every` jobs count from the anchors stored in {where}"
        finally:
            store.close()
    except StoreError as err:
        return {}, f"{where} cannot be read ({err.cause}): `every` jobs count from now"


def function_problems(config: Config, source: ConfigSource) -> list[Problem]:
    """A problem for every chain function that cannot be imported, located in the file."""
    refs = [
        (index, step, position, entry.function)
        for index, job in enumerate(config.jobs)
        for step, entries in enumerate(job.integrationIDs)
        for position, entry in enumerate(entries)
        if isinstance(entry, FunctionEntry)
    ]
    if not refs:
        return []
    positions = Locations(read_text(source.path))
    problems = []
    for index, step, position, ref in refs:
        try:
            load_function(ref, config.base_dir, config.jobs[index].id)
        except ChainError as err:
            reason = err.reason
        except Exception as err:  # the user's module raised while it was imported
            reason = f"function {ref}: importing it raised {type(err).__name__}: {err}"
        else:
            continue
        path = ("jobs", index, "integrationIDs", step, position, "function")
        problems.append(Problem(source.path.name, render_path(path), reason, *positions.find(path)))
    return problems
