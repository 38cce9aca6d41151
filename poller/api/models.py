"""The HTTP API's response models: what /openapi.json promises and every response is checked
against. Pydantic at the boundary only; they are built by poller.api.views, never stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema

from poller.timeformat import text

Instant = Annotated[
    datetime,
    PlainSerializer(text, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An aware instant as ISO 8601 with its offset ("+00:00", never "Z"), as `check` prints."""


class ProblemOut(BaseModel):
    file: str
    path: str = Field(description='Where in the document, e.g. "jobs[2].time".')
    line: int | None = None
    column: int | None = None
    expected: str
    message: str = Field(description="The whole line, as `app.py check` prints it.")


class ErrorOut(BaseModel):
    detail: str
    problems: list[ProblemOut] = Field(default_factory=list)


class EndpointOut(BaseModel):
    method: str
    path: str
    summary: str


class ServiceOut(BaseModel):
    service: str
    version: str
    status: Literal["running", "stalled", "stopped"]
    endpoints: list[EndpointOut]


class HealthOut(BaseModel):
    status: Literal["healthy", "unhealthy", "stopping"]
    scheduler_running: bool
    timestamp: Instant
    last_tick_at: Instant
    reason: str | None = None
    warning: str | None = Field(
        None,
        description="What is wrong but keeps the daemon healthy: the config file on disk is "
        "invalid and the last good config runs.",
    )


class ConfigFileOut(BaseModel):
    """The config file on disk, beside the config that runs."""

    path: str
    valid: bool = Field(description="False: the file on disk was refused; the last good runs.")
    invalid_since: Instant | None = Field(description="When the refused save was first seen.")
    problem_count: int
    problems: list[str] = Field(description="The first problems, as `app.py check` says them.")


class StepCounts(BaseModel):
    total: int
    success: int
    failed: int
    skipped: int


class StepOut(BaseModel):
    id: str = ""
    step: int = 0
    entry: int = 0
    status: str
    attempts: int = 0
    duration_ms: int = 0
    error: str | None = None
    reason: str | None = None


class DiffOut(BaseModel):
    """One changed path: added, removed or changed (with old and new), or how many more
    were omitted."""

    path: str = ""
    change: Literal["added", "removed", "changed", "omitted"]
    old: Any = None
    new: Any = None
    count: int | None = None


class AlertOut(BaseModel):
    kind: str = Field(description="failure, recovery, change or misfire.")
    channel: str
    status: Literal["pending", "sent", "failed", "held", "dropped"]
    error: str | None = None
    attempts: int | None = None


class RunOut(BaseModel):
    """A SPEC §4 run record (secrets redacted). A record the history cannot read has only
    run_id, status "unreadable" and reason."""

    run_id: str
    job_id: str = ""
    trigger: str | None = None
    scheduled_for: Instant | None = None
    started_at: Instant | None = None
    finished_at: Instant | None = None
    status: str
    reason: str | None = None
    duration_ms: int | None = None
    steps: list[StepOut] = Field(default_factory=list)
    output: dict[str, Any] | None = None
    dry_run: bool = Field(False, description="Nothing was sent: calls were only logged.")
    changed: bool | None = Field(
        None,
        description="detect_changes: the output differs from the last successful run's; "
        "null when not compared, and for the first run (the baseline).",
    )
    diff: list[DiffOut] | None = Field(None, description="What changed, capped at 50 entries.")
    items_processed: int = Field(0, description="for_each items run.")
    items_succeeded: int = 0
    items_failed: int = 0
    changes_detected: int = Field(0, description="for_each items the diff touches.")
    errors: list[str] = Field(
        default_factory=list, description="The failed items' errors, capped at 20."
    )
    alerts: list[AlertOut] = Field(
        default_factory=list, description="One entry per alert and channel."
    )
    alerts_sent: int = 0
    alert_errors: list[str] = Field(default_factory=list)


class RunBrief(BaseModel):
    run_id: str
    status: str
    trigger: str | None = None
    started_at: Instant | None = None
    duration_ms: int | None = None
    dry_run: bool = False


class LastExecution(BaseModel):
    run_id: str
    job_id: str
    status: str
    trigger: str | None
    started_at: Instant | None
    finished_at: Instant | None
    duration_ms: int | None
    reason: str | None
    steps: StepCounts


class NextRun(BaseModel):
    job_id: str
    at: Instant


class DaemonOut(BaseModel):
    host: str
    pid: int
    version: str | None = Field(description="Its Poller version (null: not known).")
    started_at: Instant | None
    last_heartbeat: Instant | None = Field(
        description="PostgreSQL: when it last said it is alive (null with SQLite)."
    )
    this: bool = Field(description="The daemon answering.")
    alive: bool = Field(
        description="False: silent for settings.daemon_lease_seconds; its runs are being "
        "marked interrupted."
    )


class WorkerOut(BaseModel):
    name: str = Field(description="client_id@host/pid of an `app.py worker`.")
    last_seen: Instant = Field(description="When its last result came.")
    results: int = Field(description="Results it published since this daemon started.")


class StatusOut(BaseModel):
    scheduler_running: bool
    started_at: Instant
    uptime_seconds: float
    next_run: NextRun | None
    jobs: int = Field(description="Jobs in the config.")
    jobs_enabled: int
    jobs_scheduled: int = Field(description="Jobs with a next fire on the scheduler.")
    inflight: int = Field(description="Runs going on now.")
    totals: dict[str, int] = Field(description="Runs in the history by status.")
    success_rate: float | None = Field(description="success / (success + failed), 0 to 1.")
    last_execution: LastExecution | None
    reloads: int
    reload_errors: int
    config_file: ConfigFileOut
    store: Literal["sqlite", "postgresql"] = Field(description="What settings.state_db is.")
    daemons: list[DaemonOut] = Field(description="The daemons sharing the state database.")
    executor: Literal["local", "kafka"] = Field(description="settings.executor.type.")
    workers: list[WorkerOut] = Field(
        description="Kafka executor: the workers seen on the results topic (empty: local)."
    )


class LogsOut(BaseModel):
    file: str
    lines: list[str]


class FireOut(BaseModel):
    at: Instant = Field(description="In the job's time zone.")
    blackout: str | None = Field(None, description="Why this fire will be skipped, if it will.")


class JobOut(BaseModel):
    id: str
    label: str
    description: str
    enabled: bool
    schedule: str = Field(description='The schedule in words, e.g. "every 10m".')
    timezone: str
    environment: str
    next_fire_at: Instant | None = Field(description="When the scheduler fires it next.")
    next_fires: list[FireOut]
    running: int
    last_run: RunBrief | None
    recent: list[RunBrief] = Field(description="Its latest runs, newest first.")
    success_rate: float | None = Field(description="Over `recent`, skipped runs left out.")


class OutputOut(BaseModel):
    """A run's output as JSON text, secrets redacted, cut when it is long."""

    text: str = Field(description="Indented JSON; only its first 4096 characters when is_cut.")
    is_cut: bool = Field(description="The JSON text is longer than 4096 characters.")
    total_chars: int = Field(description="Characters of the whole JSON text.")


class JobDetailOut(JobOut):
    definition: dict[str, Any] = Field(description="As loaded, secrets redacted.")
    environment_detail: dict[str, Any] | None = Field(
        description="The environment its integration steps use, credentials redacted."
    )
    last_output: OutputOut | None = Field(
        None, description="The `output` of its newest run record; null when it has none."
    )


class JobsOut(BaseModel):
    total: int
    offset: int
    limit: int
    jobs: list[JobOut]


class TriggerOut(BaseModel):
    job_id: str
    run_id: str
    status: str = Field(description='"running", or the final status with ?wait=true.')
    run: RunOut | None = None


class RefusedOut(BaseModel):
    job_id: str
    reason: str


class TriggerAllOut(BaseModel):
    started: list[TriggerOut]
    refused: list[RefusedOut]


class EditOut(BaseModel):
    job_id: str
    action: Literal["created", "updated", "deleted", "paused", "resumed"]
    changed: bool = Field(description="False when the file already said so (nothing written).")
    applied: bool = Field(description="The running daemon has reloaded the change.")
    file: str
