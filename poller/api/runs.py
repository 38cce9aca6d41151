"""Routes that read runs: a job's runs, newest first, and one run, each with its steps."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException

from poller.api import views
from poller.api.context import Context
from poller.api.models import RunOut
from poller.api.plumbing import errors, json_response
from poller.run.results import RunStatus

router = APIRouter()
_RUN_LIST = TypeAdapter(list[RunOut])


@router.get(
    "/jobs/{job_id}/runs",
    summary="List a job's runs, newest first",
    response_model=list[RunOut],
    responses=errors(404),
)
def get_job_runs(
    ctx: Context,
    job_id: str,
    limit: int = Query(20, ge=1, le=1000),
    status: RunStatus | None = None,
) -> Response:
    """A job's runs, newest first, with their steps."""

    def view() -> Response:
        runs = ctx.reader.recent(job_id, limit, status)
        if not runs and job_id not in ctx.daemon.config.job_map:
            raise HTTPException(404, f"no job {job_id!r} and no runs of it")
        scrub = ctx.daemon.redactor
        body = _RUN_LIST.dump_json([views.run_out(run, scrub) for run in runs])
        return Response(body, media_type="application/json")

    return ctx.read(view)


@router.get(
    "/runs/{run_id}",
    summary="Show one run with its steps",
    response_model=RunOut,
    responses=errors(404),
)
def get_run(ctx: Context, run_id: str) -> Response:
    """One run with its steps."""

    def view() -> Response:
        record = ctx.daemon.store.queued(run_id) or ctx.reader.get(run_id)
        if record is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return json_response(views.run_out(record, ctx.daemon.redactor))

    return ctx.read(view)
