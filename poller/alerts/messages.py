"""What an alert says (SPEC §9): one Alert, rendered as a webhook's JSON and a mail's text.

Alerts are built from run records, which are redacted when they are made, and from the
daemon's own lines, which the monitor redacts: nothing here sees a secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from poller.run.changes import paths_changed
from poller.timeformat import json_default

DIFF_LINES = 20
"""A change alert's text shows this many changed paths; the structured `diff` has them all."""
TEXT_MAX_CHARS = 3000


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: what a channel sends."""

    kind: str
    job_id: str
    subject: str
    """One line: "Poller: job nightly failed"."""
    lines: tuple[str, ...] = ()
    """The details, a line each."""
    run_id: str | None = None
    status: str | None = None
    reason: str | None = None
    diff: tuple[dict[str, Any], ...] | None = None
    errors: tuple[str, ...] = ()
    url: str | None = None
    """The run on the page."""
    at: str = ""
    held_back: int = 0
    """A summary: how many alerts of this job and kind the rate limit held back."""

    def body(self) -> str:
        """The plain text of a mail, and (shortened) a webhook's `text`."""
        parts = [self.subject, *self.lines]
        if self.url:
            parts.append(f"Run: {self.url}")
        text = "\n".join(parts)
        return text if len(text) <= TEXT_MAX_CHARS else text[: TEXT_MAX_CHARS - 1] + "…"

    def payload(self) -> dict[str, Any]:
        """A webhook's JSON: Slack's `text`, then the structured fields."""
        payload = {
            "text": self.body(),
            "kind": self.kind,
            "job_id": self.job_id,
            "run_id": self.run_id,
            "status": self.status,
            "reason": self.reason,
            "diff": None if self.diff is None else list(self.diff),
            "errors": list(self.errors),
            "url": self.url,
            "at": self.at,
            "held_back": self.held_back,
        }
        normalised: dict[str, Any] = json.loads(json.dumps(payload, default=json_default))
        return normalised


def about_run(kind: str, record: dict[str, Any], url: str | None, at: str) -> Alert:
    """A failure, recovery or change alert from a (redacted) run record."""
    job_id = str(record.get("job_id", "-"))
    lines: list[str] = []
    status = str(record.get("status"))
    reason = record.get("reason")
    errors = tuple(str(e) for e in record.get("errors") or ())
    diff = record.get("diff")
    if kind == "failure":
        failed_items = int(record.get("items_failed") or 0)
        if status == "failed":
            subject = f"Poller: job {job_id} failed"
            lines.append(f"Reason: {reason}")
        else:
            processed = int(record.get("items_processed") or 0)
            subject = f"Poller: job {job_id}: {failed_items} of {processed} item(s) failed"
        lines.extend(f"- {error}" for error in errors)
        if failed_items > len(errors):
            lines.append(f"- … and {failed_items - len(errors)} more")
    elif kind == "recovery":
        subject = f"Poller: job {job_id} recovered"
        lines.append("The run succeeded after one or more failed runs.")
    else:
        count = paths_changed(diff)
        subject = f"Poller: job {job_id}: the output changed"
        lines.append(f"{count} path(s) changed:" if count else "The output changed.")
        lines.extend(diff_line(entry) for entry in (diff or [])[:DIFF_LINES])
    lines.append(f"Run {record.get('run_id')} ({record.get('trigger')}), {status}, at {at}.")
    return Alert(
        kind=kind,
        job_id=job_id,
        subject=subject,
        lines=tuple(lines),
        run_id=str(record.get("run_id")),
        status=status,
        reason=None if reason is None else str(reason),
        diff=None if diff is None else tuple(diff),
        errors=errors,
        url=url,
        at=at,
    )


def about_misfire(record: dict[str, Any], url: str | None, at: str) -> Alert:
    job_id = str(record.get("job_id", "-"))
    return Alert(
        kind="misfire",
        job_id=job_id,
        subject=f"Poller: job {job_id} missed a fire",
        lines=(f"Skipped: {record.get('reason')}",),
        run_id=str(record.get("run_id")),
        status="skipped",
        reason=str(record.get("reason")),
        url=url,
        at=at,
    )


def about_daemon(line: str, at: str) -> Alert:
    return Alert(kind="daemon", job_id="-", subject=f"Poller: {line}", reason=line, at=at)


def summary(latest: Alert, held_back: int, window: str) -> Alert:
    """The one alert at a window's end for what the rate limit held back."""
    what = "alert was" if held_back == 1 else "alerts were"
    return Alert(
        kind=latest.kind,
        job_id=latest.job_id,
        subject=f"Poller: {held_back} more {latest.kind} {what} held back for "
        f"{'Poller' if latest.job_id == '-' else 'job ' + latest.job_id} in the last {window}",
        lines=("The latest:", latest.subject, *latest.lines),
        run_id=latest.run_id,
        status=latest.status,
        reason=latest.reason,
        diff=latest.diff,
        errors=latest.errors,
        url=latest.url,
        at=latest.at,
        held_back=held_back,
    )


def trial_alert(channel: str, at: str) -> Alert:
    return Alert(
        kind="test",
        job_id="-",
        subject=f"Poller: a test alert over channel {channel}",
        lines=("Sent by `python app.py alert-test`: this channel works.",),
        at=at,
    )


def diff_line(entry: dict[str, Any]) -> str:
    """One entry of a diff, as a line: "  ~ price: 1 → 2"."""
    change = entry.get("change")
    path = entry.get("path") or "(the output)"
    if change == "omitted":
        return f"  … and {entry.get('count')} more"
    if change == "added":
        return f"  + {path}: {_show(entry.get('new'))}"
    if change == "removed":
        return f"  - {path}: {_show(entry.get('old'))}"
    return f"  ~ {path}: {_show(entry.get('old'))} → {_show(entry.get('new'))}"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=json_default)
    return text if len(text) <= 80 else text[:79] + "…"
