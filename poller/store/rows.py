"""How run records become rows of the SQLite store and back: columns, JSON, instants.

Instants are stored as fixed-width UTC ISO text, so they compare and sort as text.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from poller.store.base import Claim
from poller.store.journal import ClaimRow
from poller.store.migrate import RECORD_VERSION
from poller.store.writer import Recordable
from poller.timeformat import column, json_default, parse, utc_text

log = logging.getLogger(__name__)


def claim_row(claim: Claim) -> ClaimRow:
    """The journal row of a claim; a skipped fire carries its final record as JSON."""
    record = claim.record
    if claim.scheduled_for is None:
        raise ValueError("a manual run has no fire to claim in the journal")
    final = None if record.status == "running" else to_json(record.to_dict())
    fire, started = column(claim.scheduled_for), column(record.started_at)
    return (record.run_id, claim.job_id, record.trigger, fire, started, final)


def recovered_row(claim: ClaimRow, ended: dict[str, str]) -> tuple[Any, ...]:
    """The history row of a claim left without a record: its own (a skipped fire's), else
    an interrupted one."""
    run_id, job_id, trigger, fire, started, final = claim
    if final is not None:
        record = json.loads(final)
    else:
        record = {
            "run_id": run_id,
            "job_id": job_id,
            "trigger": trigger,
            "scheduled_for": utc_text(parse(fire)),
            "started_at": utc_text(parse(started)),
            "steps": [],
            "output": None,
            **ended,
        }
    return record_row(record)


def to_json(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), default=json_default)


def result_row(result: Recordable) -> tuple[Any, ...]:
    return columns(result.to_dict(), result.scheduled_for, result.started_at)


def record_row(record: dict[str, Any]) -> tuple[Any, ...]:
    scheduled = record.get("scheduled_for")
    started = record.get("started_at") or scheduled
    return columns(
        record,
        parse(scheduled) if scheduled else None,
        parse(started) if started else datetime.now(UTC),
    )


def columns(
    record: dict[str, Any], scheduled: datetime | None, started: datetime
) -> tuple[Any, ...]:
    """A runs row: the record's columns (instants fixed-width UTC) and its JSON."""
    return (
        record["run_id"],
        record["job_id"],
        record["trigger"],
        None if scheduled is None else column(scheduled),
        column(started),
        record["status"],
        RECORD_VERSION,
        to_json(record),
    )


def decode(row: tuple[str, int, str]) -> dict[str, Any]:
    run_id, version, text = row
    problem = None
    if version > RECORD_VERSION:
        problem = f"written by a newer Poller (record version {version})"
    else:
        try:
            record = json.loads(text)
        except ValueError as err:
            problem = f"not valid JSON ({err})"
        else:
            if isinstance(record, dict):
                return record
            problem = "not a JSON object"
    log.warning("run %s in the history cannot be read: %s; it is kept as it is", run_id, problem)
    return {"run_id": run_id, "status": "unreadable", "reason": problem}
