"""Routes that act: start runs (one job, or all), and add, replace, remove, pause or resume
a job in config.json through the editor, waiting until the daemon's reload shows the change.
Errors become the HTTP answers the routes document.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from poller.api import views
from poller.api.context import ApiContext, Context
from poller.api.models import EditOut, RefusedOut, TriggerAllOut, TriggerOut
from poller.api.plumbing import ProblemError, errors, job_body
from poller.config.edit import (
    ConfigConflictError,
    EditResult,
    JobExistsError,
    JobNotFoundError,
)
from poller.config.models import Job
from poller.daemon import Daemon
from poller.errors import ConfigError
from poller.store import Store, StoreError

log = logging.getLogger(__name__)

APPLY_WAIT_SECONDS = 5.0
"""How long an edit waits for the daemon to reload it before answering `applied: false`."""
POLL_SECONDS = 0.05


def find_job(jobs: dict[str, Job], job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


def trigger(daemon: Daemon, job: Job) -> str | None:
    try:
        return daemon.trigger(job)
    except RuntimeError:  # the pool is shut down: the daemon is stopping
        raise HTTPException(503, "the daemon is stopping; no new runs") from None
    except StoreError as err:
        raise HTTPException(503, f"the run cannot be recorded: {err}") from None


def wait_for_end(store: Store, reader: Store, run_id: str, timeout: float) -> dict[str, Any] | None:
    """The run's final record (the daemon's queued one, or the written one), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = store.queued(run_id) or reader.get(run_id)
        if record is not None and record.get("status") != "running":
            return record
        time.sleep(POLL_SECONDS)
    return None


def edit(action: Callable[..., EditResult], *args: Any) -> EditResult:
    try:
        return action(*args)
    except JobNotFoundError as err:
        raise HTTPException(404, str(err)) from None
    except JobExistsError as err:
        raise HTTPException(409, str(err)) from None
    except ConfigConflictError as err:
        raise ProblemError(409, str(err), err.problems) from None
    except ConfigError as err:
        raise ProblemError(422, "the change would make config.json invalid", err.problems) from None


def wait_applied(daemon: Daemon, result: EditResult) -> bool:
    """Wait (bounded) until the daemon's reload shows the job as the file now has it."""
    wanted = result.config.job_map.get(result.job_id)
    deadline = time.monotonic() + APPLY_WAIT_SECONDS
    while daemon.config.job_map.get(result.job_id) != wanted:
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


router = APIRouter()
A_JOB = Depends(job_body)
EXAMPLE_JOB = {"id": "ping", "every": "10m", "integrationIDs": [["66c6eb17b4d36"]]}


def _documented_body(component: str, description: str) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is a job (the schema plumbing adds)."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{component}"},
                    "example": EXAMPLE_JOB,
                }
            },
        }
    }


JOB_BODY = _documented_body("Job", "A job as in config.json's jobs list.")
REPLACEMENT_BODY = _documented_body(
    "JobReplacement", "A job as in config.json's jobs list; its id may be left to the URL."
)


@router.post(
    "/jobs/{job_id}/trigger",
    summary="Run a job now",
    response_model=TriggerOut,
    status_code=202,
    responses={
        **errors(404, 409, 503),
        200: {"model": TriggerOut, "description": "Finished (?wait=true)"},
    },
)
def trigger_job(
    ctx: Context,
    job_id: str,
    wait: bool = Query(False, description="answer when the run has ended (200)"),
    timeout_seconds: float = Query(60, gt=0, le=300, description="longest wait"),
) -> JSONResponse:
    """Run a job now: 202 with its run id; 409 while max_instances runs are going on."""
    daemon = ctx.daemon
    run_id = trigger(daemon, find_job(daemon.config.job_map, job_id))
    ctx.changed()  # the job's row shows the run at once
    if run_id is None:
        raise HTTPException(409, f"job {job_id!r} is already running (max_instances)")
    out = TriggerOut(job_id=job_id, run_id=run_id, status="running")
    if wait:
        record = wait_for_end(daemon.store, ctx.reader, run_id, timeout_seconds)
        if record is not None:
            run = views.run_out(record, daemon.redactor)
            out = TriggerOut(job_id=job_id, run_id=run_id, status=run.status, run=run)
            return JSONResponse(out.model_dump(mode="json"), 200)
    return JSONResponse(out.model_dump(mode="json"), 202)


@router.post(
    "/trigger",
    summary="Run every enabled job now",
    response_model=TriggerAllOut,
    status_code=202,
    responses=errors(503),
)
def trigger_all(ctx: Context) -> TriggerAllOut:
    """Run every enabled job now."""
    started, refused = [], []
    for job in ctx.daemon.config.jobs:
        if not job.enabled:
            continue
        run_id = trigger(ctx.daemon, job)
        if run_id is None:
            refused.append(RefusedOut(job_id=job.id, reason="already running (max_instances)"))
        else:
            started.append(TriggerOut(job_id=job.id, run_id=run_id, status="running"))
    ctx.changed()
    return TriggerAllOut(started=started, refused=refused)


@router.post(
    "/jobs",
    summary="Add a job to config.json",
    response_model=EditOut,
    status_code=201,
    responses=errors(409, 413),
    openapi_extra=JOB_BODY,
)
def create_job(ctx: Context, body: dict[str, Any] = A_JOB) -> EditOut:
    """Add a job to config.json (validated like a file edit; written atomically)."""
    return _edited(ctx, edit(ctx.editor.create_job, body))


@router.put(
    "/jobs/{job_id}",
    summary="Replace a job in config.json",
    response_model=EditOut,
    responses=errors(404, 409, 413),
    openapi_extra=REPLACEMENT_BODY,
)
def update_job(ctx: Context, job_id: str, body: dict[str, Any] = A_JOB) -> EditOut:
    """Replace a job's definition in config.json; its id stays."""
    return _edited(ctx, edit(ctx.editor.update_job, job_id, body))


@router.delete(
    "/jobs/{job_id}",
    summary="Remove a job from config.json",
    response_model=EditOut,
    responses=errors(404, 409),
)
def delete_job(ctx: Context, job_id: str) -> EditOut:
    """Remove a job from config.json (a run in progress finishes)."""
    return _edited(ctx, edit(ctx.editor.delete_job, job_id))


@router.post(
    "/jobs/{job_id}/pause",
    summary="Pause a job (enabled: false)",
    response_model=EditOut,
    responses=errors(404, 409),
)
def pause_job(ctx: Context, job_id: str) -> EditOut:
    """Set the job's "enabled" to false in config.json."""
    return _edited(ctx, edit(ctx.editor.set_enabled, job_id, False))


@router.post(
    "/jobs/{job_id}/resume",
    summary="Resume a paused job (its enabled: false removed)",
    response_model=EditOut,
    responses=errors(404, 409),
)
def resume_job(ctx: Context, job_id: str) -> EditOut:
    """Remove the job's "enabled": false from config.json (true is the default)."""
    return _edited(ctx, edit(ctx.editor.set_enabled, job_id, True))


def _edited(ctx: ApiContext, result: EditResult) -> EditOut:
    ctx.changed()
    if result.changed:  # the reload's own line follows; this one says where it came from
        log.info(
            "the API %s job %s in %s", result.action, result.job_id, ctx.config_path.absolute()
        )
    return EditOut(
        job_id=result.job_id,
        action=result.action,
        changed=result.changed,
        applied=wait_applied(ctx.daemon, result),
        file=str(ctx.config_path),
    )
