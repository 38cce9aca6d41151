"""Routes that read jobs: the config's jobs with their schedules and recent runs, and one
job's definition. Edits and triggers are poller.api.actions'."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import Response

from poller.api import views
from poller.api.actions import find_job
from poller.api.context import Context
from poller.api.models import JobDetailOut, JobsOut
from poller.api.plumbing import errors, json_response

router = APIRouter()


@router.get(
    "/jobs", summary="List the jobs, their next fires and recent runs", response_model=JobsOut
)
def get_jobs(
    ctx: Context, offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)
) -> Response:
    """Jobs in config order: schedule in words, next fires, recent runs, success rate."""
    return ctx.read_shared(("jobs", offset, limit), lambda: _jobs_page(ctx, offset, limit))


@router.get(
    "/jobs/{job_id}",
    summary="Show one job's definition and state",
    response_model=JobDetailOut,
    responses=errors(404),
)
def get_job(ctx: Context, job_id: str) -> Response:
    """One job: its definition (secrets redacted) and environment, and what GET /jobs shows."""
    config = ctx.daemon.config
    job = find_job(config.job_map, job_id)
    return ctx.read(
        lambda: json_response(
            views.job_detail(ctx.daemon, ctx.reader, config, job, ctx.daemon.redactor)
        )
    )


def _jobs_page(ctx: Context, offset: int, limit: int) -> Response:
    daemon = ctx.daemon
    config = daemon.config
    jobs = config.jobs[offset : offset + limit]
    runs = ctx.reader.briefs([job.id for job in jobs], views.RECENT_RUNS)
    # The JobsOut shape (jobs is its last field), serialised a job at a time: one call for
    # the whole page holds the GIL for milliseconds, and the loop would wait for it.
    head = JobsOut(total=len(config.jobs), offset=offset, limit=limit, jobs=[])
    pieces = [views.job_out(daemon, config, job, runs[job.id]).model_dump_json() for job in jobs]
    body = f"{head.model_dump_json()[:-3]}[{','.join(pieces)}]}}"
    return Response(body, media_type="application/json")
