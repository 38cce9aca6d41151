"""`app.py history`: recent runs from the state database, or one run in full.

It reads only the database, so it needs none of the daemon's secrets, and it still works
while config.json is mid-edit and invalid (only its settings are read then).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from poller.alerts.messages import diff_line
from poller.commands.options import (
    EXIT_OK,
    EXIT_USAGE,
    ConfigSource,
    close_ids,
    duration,
    load,
    open_history,
    say,
    shorten,
    store_error,
    table,
    when,
)
from poller.config.load import load_settings
from poller.config.models import Settings
from poller.errors import ConfigError
from poller.redaction import Redactor
from poller.store import Store, StoreError

WRAP = 88
DRY_NOTE = " (dry run: nothing was sent)"
OUTPUT_LINES = 40
"""`--run` shows this many lines of a run's output (as indented JSON); --json shows all."""


def cmd_history(source: ConfigSource, args: argparse.Namespace) -> int:
    loaded = load(source, unset_ok=True)
    job_ids: set[str] | None = None
    redactor = Redactor()
    if isinstance(loaded, str):
        say(loaded)
        return EXIT_USAGE
    if isinstance(loaded, ConfigError):
        try:
            settings = load_settings(source.path)
        except ConfigError as err:
            say(str(err))
            return EXIT_USAGE
        say(
            f"note: {source.path} is not valid now ({len(loaded.problems)} problem(s): "
            "`app.py check` lists them); reading the history its settings name"
        )
    else:
        settings, job_ids = loaded.settings, set(loaded.job_map)
        redactor = Redactor(loaded.secret_values())  # records an older Poller kept, too
    try:
        store = open_history(settings)
    except StoreError as err:
        return store_error(err)
    try:
        if args.run:
            return show_run(store, settings, args, redactor)
        return show_runs(store, settings, args, job_ids, redactor)
    except StoreError as err:
        return store_error(err)
    finally:
        if store is not None:
            store.close()


def show_runs(
    store: Store | None,
    settings: Settings,
    args: argparse.Namespace,
    job_ids: set[str] | None,
    redactor: Redactor,
) -> int:
    runs = [] if store is None else store.recent(args.job_id, args.limit, args.status)
    runs = [redactor.value(run) for run in runs]
    if args.job_id and not runs:
        ever = store is not None and bool(store.recent(args.job_id, 1))
        if not ever and (job_ids is None or args.job_id not in job_ids):
            say(unknown_job(args.job_id, job_ids, settings.state_where))
            return EXIT_USAGE
    if args.json:
        print(json.dumps(runs, indent=2))
        return EXIT_OK
    if not runs:
        what = f"{args.status} runs" if args.status else "runs"
        of = f" of {args.job_id}" if args.job_id else ""
        print(f"no {what}{of} yet in {settings.state_where}")
        return EXIT_OK
    rows = [
        [
            when(run.get("started_at")),
            str(run.get("job_id") or ""),
            str(run.get("trigger") or ""),
            str(run.get("status") or "") + (" (dry run)" if run.get("dry_run") else ""),
            duration(run.get("started_at"), run.get("finished_at")),
            str(run.get("run_id") or ""),
            monitoring_note(run),
            shorten(str(run.get("reason") or "")),
        ]
        for run in runs
    ]
    headers = ["started", "job", "trigger", "status", "duration", "run id", "notes", "reason"]
    if not any(row[6] for row in rows):  # no job here detects changes, fans out or alerts
        del headers[6]
        for row in rows:
            del row[6]
    print("\n".join(table(headers, rows)))
    return EXIT_OK


def monitoring_note(run: dict[str, Any]) -> str:
    """SPEC §9 in a few words: "changed, items 4/5, 1 alert (1 failed)"."""
    notes = []
    if run.get("changed"):
        notes.append("changed")
    processed = int(run.get("items_processed") or 0)
    if processed:
        notes.append(f"items {int(run.get('items_succeeded') or 0)}/{processed}")
    alerts = run.get("alerts") or []
    if alerts:
        failed = sum(1 for alert in alerts if alert.get("status") == "failed")
        notes.append(
            f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''}"
            + (f" ({failed} failed)" if failed else "")
        )
    return ", ".join(notes)


def unknown_job(job_id: str, job_ids: set[str] | None, database: str) -> str:
    if job_ids is None:
        return (
            f"app.py history: no runs of {job_id!r} in {database}, and the config cannot "
            "be read now to say whether such a job exists (`app.py check` says why)."
        )
    hint = close_ids(job_id, job_ids)
    return (
        f"app.py history: no job {job_id!r} in the config, and no runs of it in {database}; {hint}"
    )


def show_run(
    store: Store | None, settings: Settings, args: argparse.Namespace, redactor: Redactor
) -> int:
    run_id = args.run.strip()
    record = None if store is None else store.get(run_id)
    if record is None:
        say(
            f"app.py history: no run {run_id!r} in {settings.state_where}; "
            "`app.py history` lists run ids"
        )
        return EXIT_USAGE
    for asked, field in ((args.job_id, "job_id"), (args.status, "status")):
        if asked and record.get(field) != asked:
            say(f"app.py history: run {run_id} has {field} {record.get(field)!r}, not {asked!r}")
            return EXIT_USAGE
    record = redactor.value(record)
    if args.json:
        print(json.dumps(record, indent=2))
        return EXIT_OK
    print("\n".join(run_lines(record)))
    return EXIT_OK


def run_lines(record: dict[str, Any]) -> list[str]:
    """One run as a person reads it: the record, each step, and the start of its output."""
    took = duration(record.get("started_at"), record.get("finished_at"))
    fields = [
        ("run", record.get("run_id")),
        ("job", record.get("job_id")),
        ("trigger", record.get("trigger")),
        ("status", f"{record.get('status')}{DRY_NOTE if record.get('dry_run') else ''}"),
        ("reason", record.get("reason")),
        ("scheduled", when(record.get("scheduled_for")) or "no (not a scheduled fire)"),
        ("started", when(record.get("started_at"))),
        ("finished", f"{when(record.get('finished_at'))} ({took})" if took else "not yet"),
    ]
    lines = []
    for name, value in fields:
        if value:
            lines += wrapped(f"{name:<11}", str(value))
    lines += monitoring_lines(record)
    steps = record.get("steps") or []
    if steps:
        lines.append("steps")
        rows = [
            [
                f"{step.get('step', 0) + 1}.{step.get('entry', 0) + 1}",
                str(step.get("id") or ""),
                str(step.get("status") or ""),
                str(step.get("attempts", "")),
                f"{step.get('duration_ms', 0)} ms",
            ]
            for step in steps
        ]
        table_lines = table(["#", "entry", "status", "attempts", "time"], rows)
        lines.append("  " + table_lines[0])
        for step, line in zip(steps, table_lines[1:], strict=True):
            lines.append("  " + line)
            for name in ("error", "reason"):
                if step.get(name):
                    lines += wrapped(f"      {name}: ", str(step[name]))
    output = record.get("output")
    if output is not None:
        text = json.dumps(output, indent=2, ensure_ascii=False).splitlines()
        lines.append("output")
        lines += ["  " + line for line in text[:OUTPUT_LINES]]
        if len(text) > OUTPUT_LINES:
            lines.append(f"  … {len(text) - OUTPUT_LINES} more lines (--json shows them)")
    return lines


def monitoring_lines(record: dict[str, Any]) -> list[str]:
    """Items, the change and the alerts of a run (SPEC §9), when it has them."""
    lines: list[str] = []
    processed = int(record.get("items_processed") or 0)
    if processed:
        counts = (
            f"{processed} processed: {record.get('items_succeeded', 0)} succeeded, "
            f"{record.get('items_failed', 0)} failed"
        )
        lines += wrapped(f"{'items':<11}", counts)
        for error in record.get("errors") or []:
            lines += wrapped("  ", str(error))
    changed = record.get("changed")
    if changed is not None:  # None: not compared, or the job's first run (the baseline)
        lines += wrapped(f"{'changed':<11}", "yes" if changed else "no")
        lines += [diff_line(entry) for entry in record.get("diff") or []]
    for alert in record.get("alerts") or []:
        text = f"{alert.get('kind')} to {alert.get('channel')}: {alert.get('status')}"
        if alert.get("error"):
            text += f" ({alert['error']})"
        lines += wrapped(f"{'alert':<11}", text)
    return lines


def wrapped(label: str, text: str) -> list[str]:
    """`label` then `text` wrapped at words, later lines indented under the first."""
    return textwrap.wrap(
        text,
        WRAP,
        initial_indent=label,
        subsequent_indent=" " * len(label),
        break_long_words=False,
        break_on_hyphens=False,
    ) or [label.rstrip()]
