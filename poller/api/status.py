"""Routes for the daemon's state: /health (no key, for probes), and behind the key the
service's index, /status and the log's tail."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from poller import __version__
from poller.api import views
from poller.api.context import Context
from poller.api.models import HealthOut, LogsOut, ServiceOut, StatusOut
from poller.api.plumbing import json_response

MAX_LOG_LINES = 1000

health = APIRouter()
router = APIRouter()


@health.get(
    "/health",
    summary="Is the daemon healthy? (no key needed)",
    response_model=HealthOut,
    responses={503: {"model": HealthOut}},
)
def get_health(ctx: Context) -> JSONResponse:
    """healthy (200); unhealthy (503: the loop stalled, the store failing, the pool
    down) or stopping (503), with the reason."""
    daemon = ctx.daemon
    now = daemon.clock.now()
    state, reason = daemon.health(now)
    body = HealthOut(
        status=state,
        scheduler_running=state == "healthy",
        timestamp=now,
        last_tick_at=daemon.last_tick,
        reason=reason,
        warning=views.config_warning(daemon, ctx.config_path),
    )
    return JSONResponse(body.model_dump(mode="json"), 200 if state == "healthy" else 503)


@router.get(
    "/", summary="List the endpoints, with the version and state", response_model=ServiceOut
)
def get_root(request: Request, ctx: Context) -> ServiceOut:
    """Service name, version, status and the list of endpoints."""
    state = ctx.daemon.health(ctx.daemon.clock.now())[0]
    endpoints = [
        {"method": method.upper(), "path": path, "summary": _summary(operation)}
        for path, operations in request.app.openapi()["paths"].items()
        for method, operation in operations.items()
    ]
    return ServiceOut.model_validate(
        {
            "service": "poller",
            "version": __version__,
            "status": "running" if state == "healthy" else state,
            "endpoints": endpoints,
        }
    )


@router.get(
    "/status", summary="Show the scheduler's state and the last run", response_model=StatusOut
)
def get_status(ctx: Context) -> Response:
    """Scheduler state, next run, job counts, history totals, last execution."""
    return ctx.read_shared(
        ("status",),
        lambda: json_response(views.status(ctx.daemon, ctx.reader, ctx.totals(), ctx.config_path)),
    )


@router.get("/logs", summary="Show the last lines of the log", response_model=LogsOut)
def get_logs(ctx: Context, lines: int = Query(100, ge=1, description="capped at 1000")) -> LogsOut:
    """The last lines of the current log file (secrets were already redacted)."""
    path = Path(ctx.daemon.config.settings.log_file)
    count = min(lines, MAX_LOG_LINES)
    tail = ctx.read(lambda: views.tail(path, count, ctx.daemon.redactor))
    return LogsOut(file=str(path), lines=tail)


def _summary(operation: dict[str, str]) -> str:
    """The operation's summary, else the first line of its description."""
    return operation.get("summary") or operation.get("description", "").split("\n")[0]
