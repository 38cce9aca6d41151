"""`app.py check`: is the config valid and able to run here, and when does each job fire?

Every problem is listed at once: the file's own (poller.config.load), chain functions that
cannot be imported (importing them is what the daemon does at run time), and `${NAME}`
variables this shell does not set (the daemon needs them; `check` does not). Next fires
count from the daemon's stored anchors when the state database exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
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
from poller.config.chain import FUNCTION_RE
from poller.config.jsonpos import Locations, PathKey
from poller.config.load import (
    BOM,
    by_place,
    config_warnings,
    parse_json,
    read_text,
    render_path,
    variable_values,
)
from poller.config.models import Config
from poller.errors import ChainError, ConfigError, Problem
from poller.forecast import JobForecast, forecast
from poller.redaction import Redactor
from poller.run.steps import load_function
from poller.store import JobState, StoreError
from poller.timing import local_zone


def cmd_check(source: ConfigSource, args: argparse.Namespace) -> int:
    loaded = load(source, unset_ok=True)
    if isinstance(loaded, str):
        say(loaded)
        return EXIT_FAILED
    imports = function_problems(source, loaded)
    if isinstance(loaded, ConfigError):
        every = ConfigError(sorted([*loaded.problems, *imports], key=by_place))
        if args.json:
            errors = [p.as_dict() for p in every.problems]
            report = {"valid": False, "errors": errors, "warnings": [], "state": None, "jobs": []}
            print(json.dumps(report, indent=2))
        else:
            print(every)
        return EXIT_FAILED
    config = loaded
    problems = sorted([*config.unset, *imports], key=by_place)
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
    if item.job.dry_run:
        state += ", dry run: calls are logged, not sent"
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
    where = config.settings.state_where
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


def function_problems(source: ConfigSource, loaded: Config | ConfigError) -> list[Problem]:
    """A problem for every chain function that cannot be imported, located in the file;
    found in the file's JSON, so they are listed beside its other problems too.

    Importing runs the user's module: whatever it prints goes to stderr (stdout may be
    `check --json`), whatever it raises (SystemExit too) is its problem, and the config's
    secrets and the values of its `${NAME}` variables are masked in what is shown.
    """
    try:
        text = read_text(source.path).removeprefix(BOM)
        raw = parse_json(text, source.path.name)
    except ConfigError:
        return []
    refs = list(function_refs(raw))
    if not refs:
        return []
    secrets = variable_values(raw, os.environ)
    if isinstance(loaded, Config):
        secrets += loaded.secret_values()
    redactor = Redactor(secrets)
    folder = source.path.absolute().parent
    positions = Locations(text)
    problems = []
    for path, job_id, ref in refs:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                load_function(ref, folder, job_id)
        except ChainError as err:
            reason = err.reason
        except BaseException as err:  # the user's module raised while it was imported
            reason = f"function {ref}: importing it raised {type(err).__name__}: {err}"
        else:
            continue
        problems.append(
            Problem(
                source.path.name,
                render_path(path),
                redactor.text(reason),
                *positions.find(path),
            )
        )
    return problems


def function_refs(raw: Any) -> Iterator[tuple[PathKey, str, str]]:
    """(path, job id, "module:callable") of every well-formed function entry in the JSON."""
    jobs = raw if isinstance(raw, list) else raw.get("jobs") if isinstance(raw, dict) else None
    for index, job in enumerate(jobs if isinstance(jobs, list) else []):
        if not isinstance(job, dict) or not isinstance(job.get("integrationIDs"), list):
            continue
        job_id = job["id"] if isinstance(job.get("id"), str) else "-"
        head = ("jobs",) if isinstance(raw, dict) else ()
        for path, ref in _chain_refs(job["integrationIDs"], (*head, index, "integrationIDs")):
            yield path, job_id, ref


def _chain_refs(steps: list[Any], where: PathKey) -> Iterator[tuple[PathKey, str]]:
    """(path, "module:callable") of the function entries of a chain, sub-chains included."""
    for step, entries in enumerate(steps):
        for position, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, dict):
                continue
            ref, sub = entry.get("function"), entry.get("steps")
            if isinstance(ref, str) and FUNCTION_RE.fullmatch(ref):
                yield (*where, step, position, "function"), ref
            elif "for_each" in entry and isinstance(sub, list):
                yield from _chain_refs(sub, (*where, step, position, "steps"))
