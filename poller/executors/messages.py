"""The Kafka executor's two messages (SPEC §11), each keyed by its run id.

A run request (daemon → workers, on `runs_topic`) is a lambda event (poller.run.invocation)
with the run's identity: the job and its environment as the config file has them, every
`${NAME}` left for the worker to fill from its own environment, so no secret crosses
Kafka. A run result (worker → daemons, on `results_topic`) is the run's record as the
worker's redactor left it, with who ran it and on which delivery.

Both come from outside the process: anything on the cluster may write them. Decoding
checks size, depth and every field, and says in one line what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from poller.config.models import Config, Job
from poller.jsondepth import too_deep_at
from poller.run.results import RunResult, StepResult, Trigger
from poller.timeformat import utc_text

MAX_REDELIVERIES = 3
"""A request delivered again more than this many times (a worker died running it each
time) goes to the dead-letter topic, and its run is failed."""
WORKERS_NOTE = ("", "kafka workers")
"""The store note (job id, name) of the workers the daemons saw, for `app.py status`."""
DAEMON_ONLY = ("alerts", "ping_url")
"""A job's fields a request leaves out: the daemon sends its alerts and pings (and a
worker has no settings.alerts channels to check them against)."""
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""A message larger than this is not decoded (records are capped far below it)."""


class InvalidMessageError(ValueError):
    """A message that is not a run request or result; the text says what is wrong."""


@dataclass(frozen=True, slots=True)
class RunRequest:
    run_id: str
    job_id: str
    trigger: Trigger
    scheduled_for: datetime | None
    published_at: datetime
    daemon: str
    """Who published it: results are the publishing daemon's to record."""
    event: dict[str, Any]
    """The lambda event: job, environments, settings (timezone), as written."""

    @classmethod
    def of(
        cls, config: Config, job: Job, record: RunResult, daemon: str, now: datetime
    ) -> RunRequest:
        written_job, environments = config.written(job)
        event = {
            "job": {k: v for k, v in written_job.items() if k not in DAEMON_ONLY},
            "environments": environments,
            "settings": {"timezone": config.settings.timezone},
        }
        return cls(
            record.run_id,
            job.id,
            record.trigger,
            record.scheduled_for,
            now,
            daemon,
            event,
        )

    def encoded(self) -> tuple[bytes, bytes]:
        """(key, value) of the message."""
        value = {
            "run_id": self.run_id,
            "job_id": self.job_id,
            "trigger": self.trigger,
            "scheduled_for": None if self.scheduled_for is None else utc_text(self.scheduled_for),
            "published_at": utc_text(self.published_at),
            "daemon": self.daemon,
            "event": self.event,
        }
        return self.run_id.encode(), json.dumps(value, separators=(",", ":")).encode()

    def lambda_event(self, config_dir: str) -> dict[str, Any]:
        """The event lambda_handler would be given for this run."""
        run = {"run_id": self.run_id, "trigger": self.trigger}
        if self.scheduled_for is not None:
            run["scheduled_for"] = utc_text(self.scheduled_for)
        return {**self.event, "run": run, "config_dir": config_dir}

    @classmethod
    def decode(cls, value: bytes | None) -> RunRequest:
        """Raises InvalidMessageError."""
        parsed = _validated(value, "run request", _RequestIn)
        return cls(
            parsed.run_id,
            parsed.job_id,
            parsed.trigger,
            parsed.scheduled_for,
            parsed.published_at,
            parsed.daemon,
            parsed.event,
        )


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A run result message: the record, who ran it, on which delivery of its request."""

    record: RunResult
    worker: str
    delivery: int
    dead_letter: bool = False
    """The request went to the dead-letter topic (redelivered too often, or unreadable)."""

    def encoded(self) -> tuple[bytes, bytes]:
        value = {
            "run": self.record.to_dict(),
            "worker": self.worker,
            "delivery": self.delivery,
            "dead_letter": self.dead_letter,
        }
        text = json.dumps(value, separators=(",", ":"), default=str)
        return self.record.run_id.encode(), text.encode()

    @classmethod
    def decode(cls, value: bytes | None) -> RunOutcome:
        """Raises InvalidMessageError."""
        parsed = _validated(value, "run result", _OutcomeIn)
        run = parsed.run
        record = RunResult(
            run_id=run.run_id,
            job_id=run.job_id,
            trigger=run.trigger,
            scheduled_for=run.scheduled_for,
            started_at=run.started_at,
            finished_at=run.finished_at,
            status=run.status,
            reason=run.reason,
            steps=tuple(
                StepResult(
                    id=step.id,
                    status=step.status,
                    step=step.step,
                    entry=step.entry,
                    attempts=step.attempts,
                    duration_ms=step.duration_ms,
                    error=step.error,
                    reason=step.reason,
                )
                for step in run.steps
            ),
            output=run.output,
            dry_run=run.dry_run,
            items_processed=run.items_processed,
            items_succeeded=run.items_succeeded,
            items_failed=run.items_failed,
            errors=tuple(run.errors),
        )
        return cls(record, parsed.worker, parsed.delivery, parsed.dead_letter)


def request_ids(value: bytes | None) -> tuple[str, str] | None:
    """(run id, job id) of a request too broken to decode, when it still names them."""
    try:
        data = _json_object(value, "run request")
    except InvalidMessageError:
        return None
    run_id, job_id = data.get("run_id"), data.get("job_id")
    if isinstance(run_id, str) and run_id and isinstance(job_id, str) and job_id:
        return run_id[:200], job_id[:200]
    return None


# --- validation ---------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)


In = TypeVar("In", bound=_In)


class _RequestIn(_In):
    run_id: str = Field(min_length=1, max_length=200)
    job_id: str = Field(min_length=1, max_length=200)
    trigger: Trigger
    scheduled_for: AwareDatetime | None = None
    published_at: AwareDatetime
    daemon: str = Field("", max_length=500)
    event: dict[str, Any]


class _StepIn(_In):
    id: str = Field(max_length=500)
    status: Literal["success", "skipped", "failed"]
    step: int = Field(ge=0)
    entry: int = Field(ge=0)
    attempts: int = Field(0, ge=0)
    duration_ms: int = Field(0, ge=0)
    error: str | None = None
    reason: str | None = None


class _RunIn(_In):
    run_id: str = Field(min_length=1, max_length=200)
    job_id: str = Field(min_length=1, max_length=200)
    trigger: Trigger
    scheduled_for: AwareDatetime | None = None
    started_at: AwareDatetime
    finished_at: AwareDatetime
    status: Literal["success", "failed", "skipped", "interrupted"]
    reason: str | None = None
    steps: list[_StepIn] = Field(default_factory=list, max_length=10_000)
    output: dict[str, Any] | None = None
    dry_run: bool = False
    items_processed: int = Field(0, ge=0)
    items_succeeded: int = Field(0, ge=0)
    items_failed: int = Field(0, ge=0)
    errors: list[str] = Field(default_factory=list, max_length=1_000)


class _OutcomeIn(_In):
    run: _RunIn
    worker: str = Field("", max_length=500)
    delivery: int = Field(1, ge=1)
    dead_letter: bool = False


def _validated(value: bytes | None, what: str, model: type[In]) -> In:
    data = _json_object(value, what)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise InvalidMessageError(f"invalid {what}: {_first(err)}") from None


def _json_object(value: bytes | None, what: str) -> dict[str, Any]:
    if not value:
        raise InvalidMessageError(f"invalid {what}: the message is empty")
    if len(value) > MAX_MESSAGE_BYTES:
        raise InvalidMessageError(
            f"invalid {what}: {len(value)} bytes, more than {MAX_MESSAGE_BYTES}"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessageError(f"invalid {what}: not UTF-8 text") from None
    depth = too_deep_at(text)
    if depth is not None:
        raise InvalidMessageError(f"invalid {what}: nested too deeply (at character {depth})")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise InvalidMessageError(f"invalid {what}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise InvalidMessageError(f"invalid {what}: expected a JSON object")
    return data


def _first(err: ValidationError) -> str:
    """The first problem of a validation error, as `field: what is wrong`."""
    problem = err.errors(include_url=False)[0]
    where = ".".join(str(part) for part in problem["loc"]) or "the message"
    return f"{where}: {problem['msg']}"
