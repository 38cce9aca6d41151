"""A lambda event (lambda_function.py's docstring) validated into a job to run once: what
`lambda_handler` and a Kafka worker's run requests (SPEC §11) both run."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from poller import timeformat
from poller.config.load import parse_config
from poller.config.models import Config, Job, slugify
from poller.errors import ConfigError
from poller.run.results import TRIGGERS, RunResult, Trigger, new_run_id

EVENT_KEYS = frozenset(
    {"job", "environments", "settings", "input", "dry_run", "force", "run", "config_dir"}
)
RUN_KEYS = frozenset({"run_id", "trigger", "scheduled_for"})


class EventError(ValueError):
    """An event lambda_handler cannot run; the message is the failed run's reason."""


@dataclasses.dataclass(frozen=True, slots=True)
class Invocation:
    """A validated event."""

    job: Job
    config: Config
    run_id: str
    trigger: Trigger
    scheduled_for: datetime | None
    input: dict[str, Any] | None
    dry_run: bool | None
    force: bool


def parse_event(event: Any, environ: Mapping[str, str], default_dir: Path) -> Invocation:
    """Validate an event (interpolating `${NAME}` from `environ`).

    Raises:
        EventError: naming every problem found.
    """
    if not isinstance(event, dict):
        raise EventError(f"invalid event: expected a JSON object, got {_kind(event)}")
    unknown = sorted(set(event) - EVENT_KEYS)
    if unknown:
        raise EventError(
            f"invalid event: unknown key {', '.join(unknown)}; expected "
            + ", ".join(sorted(EVENT_KEYS))
        )
    if not isinstance(event.get("job"), dict):
        raise EventError('invalid event: "job" is required: a job object as in config.json')
    for key in ("environments", "settings", "input", "run"):
        if event.get(key) is not None and not isinstance(event[key], dict):
            raise EventError(f'invalid event: "{key}" must be an object, not {_kind(event[key])}')
    for key in ("dry_run", "force"):
        if event.get(key) is not None and not isinstance(event[key], bool):
            raise EventError(f'invalid event: "{key}" must be true or false')
    run = event.get("run") or {}
    unknown = sorted(set(run) - RUN_KEYS)
    if unknown:
        raise EventError(
            f"invalid event: unknown key run.{', run.'.join(unknown)}; expected "
            + ", ".join(sorted(RUN_KEYS))
        )
    trigger = run.get("trigger", "manual")
    if trigger not in TRIGGERS:
        raise EventError(
            f"invalid event: run.trigger {trigger!r} is not one of {', '.join(TRIGGERS)}"
        )
    run_id = run.get("run_id") or new_run_id()
    if not isinstance(run_id, str):
        raise EventError("invalid event: run.run_id must be a string")
    config_dir = event.get("config_dir") or str(default_dir)
    if not isinstance(config_dir, str):
        raise EventError("invalid event: config_dir must be a string (a folder)")
    config = _config(event, Path(config_dir).resolve(), environ)
    return Invocation(
        job=config.jobs[0],
        config=config,
        run_id=run_id,
        trigger=cast(Trigger, trigger),
        scheduled_for=_instant(run.get("scheduled_for")),
        input=event.get("input"),
        dry_run=event.get("dry_run"),
        force=bool(event.get("force", False)),
    )


def _config(event: dict[str, Any], config_dir: Path, environ: Mapping[str, str]) -> Config:
    raw = {
        "settings": event.get("settings") or {},
        "environments": event.get("environments") or {},
        "jobs": [event["job"]],
    }
    try:
        # parse_config does what load_config does for a file: ${NAME}, validation, and
        # relative paths against config_dir (where function modules are imported from).
        return parse_config(json.dumps(raw), config_dir / "event.json", environ)
    except ConfigError as err:
        problems = [
            dataclasses.replace(
                problem,
                file="event",
                path=problem.path.replace("jobs[0]", "job", 1),
                line=None,
                column=None,
            )
            .render()
            .removeprefix("event: ")
            for problem in err.problems
        ]
        raise EventError("invalid event: " + "; ".join(problems)) from None
    except (TypeError, ValueError) as err:
        raise EventError(f"invalid event: not JSON data ({err})") from None


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return timeformat.parse(str(value))
    except ValueError as err:
        raise EventError(
            f'invalid event: run.scheduled_for {err}, e.g. "2024-05-01T08:00:00+00:00"'
        ) from None


def failed_run(event: Any, reason: str, now: datetime) -> dict[str, Any]:
    job = event.get("job") if isinstance(event, dict) else None
    run = event.get("run") if isinstance(event, dict) else None
    job_id = ""
    if isinstance(job, dict):
        label = job.get("label")
        job_id = str(job.get("id") or (slugify(label) if isinstance(label, str) else ""))
    run_id = run.get("run_id") if isinstance(run, dict) else None
    trigger = run.get("trigger") if isinstance(run, dict) else None
    return RunResult(
        run_id=run_id if isinstance(run_id, str) and run_id else new_run_id(),
        job_id=job_id,
        trigger=cast(Trigger, trigger if trigger in TRIGGERS else "manual"),
        scheduled_for=None,
        started_at=now,
        finished_at=now,
        status="failed",
        reason=reason,
    ).to_dict()


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
