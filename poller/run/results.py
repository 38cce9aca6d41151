"""RunResult and StepResult: the SPEC §4 record of one run, shared by the history, the API,
`app.py run` and `lambda_handler`. Pure data: building, capping and (de)serialising, no I/O.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from poller.timeformat import json_default, ms_between, utc_text

Trigger = Literal["schedule", "catch-up", "startup", "manual"]
RunStatus = Literal["running", "success", "failed", "skipped", "interrupted"]
StepStatus = Literal["success", "skipped", "failed"]

TRIGGERS: tuple[str, ...] = get_args(Trigger)
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)

OUTPUT_MAX_BYTES = 64 * 1024
"""A run's output larger than this (as compact JSON, UTF-8) is replaced by a preview."""
PREVIEW_CHARS = 1024
ERROR_MAX_CHARS = 2000


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one chain entry did; `step` and `entry` are 0-based: integrationIDs[step][entry]."""

    id: str
    status: StepStatus
    step: int
    entry: int
    attempts: int = 0
    duration_ms: int = 0
    error: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "step": self.step,
            "entry": self.entry,
            "status": self.status,
            "attempts": self.attempts,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RunResult:
    """One run of a job. `reason` is set when the run was skipped, failed or interrupted.

    `output` is JSON-normalised and capped at construction (see `cap_output`), so every
    RunResult can be stored and returned as it is.
    """

    run_id: str
    job_id: str
    trigger: Trigger
    scheduled_for: datetime | None
    started_at: datetime
    finished_at: datetime | None
    status: RunStatus
    reason: str | None = None
    steps: tuple[StepResult, ...] = ()
    output: dict[str, Any] | None = field(default=None)
    dry_run: bool = False
    """Nothing was sent: calls were only logged (the job's or the run's `dry_run`)."""
    changed: bool | None = None
    """detect_changes: the output differs from the last successful run's; None when not
    compared (no detect_changes, the first run: a baseline, a failed run)."""
    diff: tuple[dict[str, Any], ...] | None = None
    """What changed: {"path", "change": added | removed | changed, "old", "new"}, capped."""
    items_processed: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    changes_detected: int = 0
    errors: tuple[str, ...] = ()
    """The errors of failed for_each items ("item KEY: error"), capped."""
    alerts: tuple[dict[str, Any], ...] = ()
    """Alerts about this run: {"kind", "channel", "status": sent | failed | held, "error"}."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", cap_output(self.output))

    @property
    def duration_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return ms_between(self.started_at, self.finished_at)

    def to_dict(self) -> dict[str, Any]:
        """The SPEC §4 shape, JSON-ready; instants are ISO 8601 in UTC with an offset."""
        return {
            "run_id": self.run_id,
            "job_id": self.job_id,
            "trigger": self.trigger,
            "scheduled_for": _iso(self.scheduled_for),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "status": self.status,
            "reason": self.reason,
            "steps": [step.to_dict() for step in self.steps],
            "output": self.output,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "diff": None if self.diff is None else list(self.diff),
            "items_processed": self.items_processed,
            "items_succeeded": self.items_succeeded,
            "items_failed": self.items_failed,
            "changes_detected": self.changes_detected,
            "errors": list(self.errors),
            "alerts": list(self.alerts),
            "alerts_sent": self.alerts_sent,
            "alert_errors": [a["error"] for a in self.alerts if a.get("status") == "failed"],
        }

    @property
    def alerts_sent(self) -> int:
        return sum(1 for alert in self.alerts if alert.get("status") == "sent")


def new_run_id() -> str:
    """A fresh, unique run id: a random (version 4) UUID as text.

    The bits come from a generator seeded once from the OS, not from os.urandom per id:
    the daemon's loop makes one per fire, and each system call there is a chance for
    another thread to take the GIL and make the next fire late.
    """
    return uuid_text(_RUN_IDS.getrandbits(128), 4)


def uuid_text(bits: int, version: int) -> str:
    """str(uuid.UUID(int=bits, version=version)), without building the UUID object.

    A run makes a few of these (its id, its request IDs); the object costs more than the
    text at a thousand runs a second.
    """
    text = f"{uuid_bits(bits, version):032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def uuid_bits(bits: int, version: int) -> int:
    """uuid.UUID(int=bits, version=version).int: the version and RFC 4122 variant set."""
    return bits & ~_UUID_VERSION_MASK | version << 76 | _UUID_VARIANT_RFC_4122


_RUN_IDS = random.Random()  # seeded from os.urandom
_UUID_VERSION_MASK = (0xF000 << 64) | (0xC000 << 48)
_UUID_VARIANT_RFC_4122 = 0x8000 << 48


def started_result(
    job_id: str,
    *,
    trigger: Trigger,
    started_at: datetime,
    scheduled_for: datetime | None = None,
    run_id: str | None = None,
) -> RunResult:
    """The record of a run that has begun (status "running"), for the history to hold."""
    return RunResult(
        run_id=run_id or new_run_id(),
        job_id=job_id,
        trigger=trigger,
        scheduled_for=scheduled_for,
        started_at=started_at,
        finished_at=None,
        status="running",
    )


def skipped_result(
    job_id: str,
    reason: str,
    *,
    trigger: Trigger,
    at: datetime,
    scheduled_for: datetime | None = None,
    run_id: str | None = None,
) -> RunResult:
    """A run that did not start: blackout, already running, misfire. No steps, no output."""
    started = started_result(
        job_id, trigger=trigger, started_at=at, scheduled_for=scheduled_for, run_id=run_id
    )
    return dataclasses.replace(started, finished_at=at, status="skipped", reason=reason)


def cap_output(output: dict[str, Any] | None) -> dict[str, Any] | None:
    """JSON-normalise an output (non-JSON values become strings) and cap its size.

    An output over OUTPUT_MAX_BYTES becomes {"truncated": true, "size": <bytes>,
    "preview": <first PREVIEW_CHARS characters of its JSON>}.
    """
    if not output:
        return output
    text = json.dumps(output, default=json_default, ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    if size <= OUTPUT_MAX_BYTES:
        normalised: dict[str, Any] = json.loads(text)
        return normalised
    return {"truncated": True, "size": size, "preview": text[:PREVIEW_CHARS]}


def cap_error(text: str) -> str:
    """An error text short enough for a run record."""
    if len(text) <= ERROR_MAX_CHARS:
        return text
    return text[: ERROR_MAX_CHARS - 1] + "…"


def _iso(instant: datetime | None) -> str | None:
    return None if instant is None else utc_text(instant)
