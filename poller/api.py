"""The HTTP API of a running daemon (SPEC §8): status, jobs, runs, actions, metrics, the page.

It reads the daemon's state and its own history connection, hands runs to the daemon's pool,
and writes job changes to config.json (the daemon's reload applies them); it never runs a
chain or touches the scheduler itself. Serving it is poller.apiserver's work.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, TypeAdapter
from starlette.exceptions import HTTPException
from swagger_ui_bundle import swagger_ui_path

from poller import __version__, apiactions, apihttp, apisecurity, apiviews
from poller.apihttp import openapi_with_job_schema
from poller.apimodels import (
    EditOut,
    ErrorOut,
    HealthOut,
    JobDetailOut,
    JobsOut,
    LogsOut,
    RefusedOut,
    RunOut,
    ServiceOut,
    StatusOut,
    TriggerAllOut,
    TriggerOut,
)
from poller.configedit import ConfigEditor, EditResult
from poller.daemon import Daemon
from poller.metrics import Metrics
from poller.results import RunStatus
from poller.ui import FOLDER, page

MAX_BODY_BYTES = 64 * 1024
MAX_LOG_LINES = 1000
SHARED_SECONDS = 1.0
"""GET /status and GET /jobs answers are shared by identical requests for this long."""
_RUN_LIST = TypeAdapter(list[RunOut])
P = ParamSpec("P")
R = TypeVar("R")
EXAMPLE_JOB = {"id": "ping", "every": "10m", "integrationIDs": [["66c6eb17b4d36"]]}

# For the OpenAPI document (Swagger's Authorize button); apisecurity.check_key does the check.
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")
_bearer = HTTPBearer(auto_error=False, description="the API key, as Prometheus sends it")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (400, "Host name not served (DNS rebinding guard)"),
        (401, "No API key (X-API-Key or Authorization: Bearer)"),
        (403, "Wrong API key, or a cross-origin request"),
        (415, "A body that is not application/json"),
        (422, "Invalid parameters or body"),
    )
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    texts = {404: "No such job or run", 409: "Conflict", 413: "Body too large", 503: "Stopped"}
    extra: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorOut, "description": texts[code]} for code in codes
    }
    return {**_ERRORS, **extra}


def create_app(
    daemon: Daemon, config_path: Path, api_key: str, allowed_hosts: frozenset[str] | None
) -> FastAPI:
    """The API of `daemon`; also starts counting the daemon's runs for /metrics.

    Args:
        api_key: what every data and action endpoint asks for.
        allowed_hosts: the Host names served, or None for any (poller.apisecurity).
    """
    reader = daemon.store.open_reader()
    totals = apiviews.TotalsCache(daemon.store.open_reader())  # a slow count blocks no read
    editor = ConfigEditor(config_path)
    metrics = Metrics(daemon, totals)
    daemon.executor.run_chain = metrics.observing(daemon.executor.run_chain)

    def require_key(
        request: Request,
        _header: Annotated[str | None, Security(_key_header)] = None,
        _bearer_key: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    ) -> None:
        apisecurity.check_key(request, api_key)

    computing = threading.Lock()
    shared = apihttp.SharedResponses(SHARED_SECONDS)

    def one_at_a_time(view: Callable[P, R]) -> Callable[P, R]:
        """Let one request at a time compute a read view; the others wait on a lock.

        A waiting thread does not compete for the GIL: with several views computing at
        once, the scheduler loop would wait behind each of them in turn, and fires would
        be late (bench/bench_api.py measures it).
        """

        @functools.wraps(view)
        def serialised(*args: P.args, **kwargs: P.kwargs) -> R:
            with computing:
                return view(*args, **kwargs)

        return serialised

    def shared_by_pages(view: Callable[P, Response]) -> Callable[P, Response]:
        """Let identical requests within SHARED_SECONDS share one response (the pages' polls)."""

        @functools.wraps(view)
        def sharing(*args: P.args, **kwargs: P.kwargs) -> Response:
            key = (view.__name__, *sorted(kwargs.items()))
            return shared.get(key, daemon.config, lambda: view(*args, **kwargs))

        return sharing

    app = FastAPI(
        title="Poller",
        version=__version__,
        summary="Status, jobs, runs and actions of a running Poller daemon.",
        docs_url=None,  # served below from this process: /docs works with no internet
        redoc_url=None,
    )
    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    app.mount("/ui/assets", StaticFiles(directory=FOLDER), name="page-assets")

    def close() -> None:
        reader.close()
        totals.reader.close()

    app.state.close = close
    apihttp.install(app, MAX_BODY_BYTES)
    app.add_middleware(apisecurity.Guard, allowed_hosts=allowed_hosts)  # outermost
    api = APIRouter(dependencies=[Depends(require_key)], responses=_ERRORS)

    @app.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
    def get_health() -> JSONResponse:
        """healthy (200); unhealthy (503: the loop stalled, the store failing, the pool
        down) or stopping (503), with the reason."""
        now = daemon.clock.now()
        state, reason = daemon.health(now)
        body = HealthOut(
            status=state,
            scheduler_running=state == "healthy",
            timestamp=now,
            last_tick_at=daemon.last_tick,
            reason=reason,
        )
        return JSONResponse(body.model_dump(mode="json"), 200 if state == "healthy" else 503)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def get_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Poller API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    @app.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    def get_ui() -> HTMLResponse:
        return HTMLResponse(page())

    @api.get("/", response_model=ServiceOut)
    def get_root() -> ServiceOut:
        """Service name, version, status and the list of endpoints."""
        state = daemon.health(daemon.clock.now())[0]
        endpoints = [
            {
                "method": method.upper(),
                "path": path,
                "summary": (operation.get("description") or operation.get("summary", "")).split(
                    "\n"
                )[0],
            }
            for path, operations in app.openapi()["paths"].items()
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

    @api.get("/status", response_model=StatusOut)
    @one_at_a_time
    @shared_by_pages
    def get_status() -> Response:
        """Scheduler state, next run, job counts, history totals, last execution."""
        return _json(apiviews.status(daemon, reader, totals()))

    @api.get("/logs", response_model=LogsOut)
    @one_at_a_time
    def get_logs(lines: int = Query(100, ge=1, description="capped at 1000")) -> LogsOut:
        """The last lines of the current log file (secrets were already redacted)."""
        path = Path(daemon.config.settings.log_file)
        return LogsOut(
            file=str(path), lines=apiviews.tail(path, min(lines, MAX_LOG_LINES), daemon.redactor)
        )

    @api.get("/jobs", response_model=JobsOut)
    @one_at_a_time
    @shared_by_pages
    def get_jobs(offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> Response:
        """Jobs in config order: schedule in words, next fires, recent runs, success rate."""
        config = daemon.config
        jobs = config.jobs[offset : offset + limit]
        runs = reader.briefs([job.id for job in jobs], apiviews.RECENT_RUNS)
        # The JobsOut shape (jobs is its last field), serialised a job at a time: one call
        # for the whole page holds the GIL for milliseconds, and the loop would wait for it.
        head = JobsOut(total=len(config.jobs), offset=offset, limit=limit, jobs=[])
        pieces = [
            apiviews.job_out(daemon, config, job, runs[job.id]).model_dump_json() for job in jobs
        ]
        body = f"{head.model_dump_json()[:-3]}[{','.join(pieces)}]}}"
        return Response(body, media_type="application/json")

    @api.get("/jobs/{job_id}", response_model=JobDetailOut, responses=_errors(404))
    @one_at_a_time
    def get_job(job_id: str) -> Response:
        """One job: its definition (secrets redacted) and environment, and what GET /jobs shows."""
        config = daemon.config
        job = apiactions.find_job(config.job_map, job_id)
        return _json(apiviews.job_detail(daemon, reader, config, job, daemon.redactor))

    @api.get("/jobs/{job_id}/runs", response_model=list[RunOut], responses=_errors(404))
    @one_at_a_time
    def get_job_runs(
        job_id: str,
        limit: int = Query(20, ge=1, le=1000),
        status: RunStatus | None = None,
    ) -> Response:
        """A job's runs, newest first, with their steps."""
        runs = reader.recent(job_id, limit, status)
        if not runs and job_id not in daemon.config.job_map:
            raise HTTPException(404, f"no job {job_id!r} and no runs of it")
        scrub = daemon.redactor
        body = _RUN_LIST.dump_json([apiviews.run_out(run, scrub) for run in runs])
        return Response(body, media_type="application/json")

    @api.get("/runs/{run_id}", response_model=RunOut, responses=_errors(404))
    @one_at_a_time
    def get_run(run_id: str) -> Response:
        """One run with its steps."""
        record = daemon.store.queued(run_id) or reader.get(run_id)
        if record is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return _json(apiviews.run_out(record, daemon.redactor))

    @api.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    @one_at_a_time
    def get_metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.post(
        "/jobs/{job_id}/trigger",
        response_model=TriggerOut,
        status_code=202,
        responses={
            **_errors(404, 409, 503),
            200: {"model": TriggerOut, "description": "Finished (?wait=true)"},
        },
    )
    def trigger_job(
        job_id: str,
        wait: bool = Query(False, description="answer when the run has ended (200)"),
        timeout_seconds: float = Query(60, gt=0, le=300, description="longest wait"),
    ) -> JSONResponse:
        """Run a job now: 202 with its run id; 409 while max_instances runs are going on."""
        run_id = apiactions.trigger(daemon, apiactions.find_job(daemon.config.job_map, job_id))
        shared.clear()  # the job's row shows the run at once
        if run_id is None:
            raise HTTPException(409, f"job {job_id!r} is already running (max_instances)")
        out = TriggerOut(job_id=job_id, run_id=run_id, status="running")
        if wait:
            record = apiactions.wait_for_end(daemon.store, reader, run_id, timeout_seconds)
            if record is not None:
                run = apiviews.run_out(record, daemon.redactor)
                out = TriggerOut(job_id=job_id, run_id=run_id, status=run.status, run=run)
                return JSONResponse(out.model_dump(mode="json"), 200)
        return JSONResponse(out.model_dump(mode="json"), 202)

    @api.post("/trigger", response_model=TriggerAllOut, status_code=202, responses=_errors(503))
    def trigger_all() -> TriggerAllOut:
        """Run every enabled job now."""
        started, refused = [], []
        for job in daemon.config.jobs:
            if not job.enabled:
                continue
            run_id = apiactions.trigger(daemon, job)
            if run_id is None:
                refused.append(RefusedOut(job_id=job.id, reason="already running (max_instances)"))
            else:
                started.append(TriggerOut(job_id=job.id, run_id=run_id, status="running"))
        shared.clear()
        return TriggerAllOut(started=started, refused=refused)

    a_job = Depends(apihttp.job_body)
    job_schema: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "description": "A job as in config.json's jobs list.",
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Job"},
                    "example": {
                        "id": "ping",
                        "every": "10m",
                        "integrationIDs": [["66c6eb17b4d36"]],
                    },
                }
            },
        }
    }

    def edited(result: EditResult) -> EditOut:
        shared.clear()
        return EditOut(
            job_id=result.job_id,
            action=result.action,
            changed=result.changed,
            applied=apiactions.wait_applied(daemon, result),
            file=str(config_path),
        )

    @api.post(
        "/jobs",
        response_model=EditOut,
        status_code=201,
        responses=_errors(409, 413),
        openapi_extra=job_schema,
    )
    def create_job(body: dict[str, Any] = a_job) -> EditOut:
        """Add a job to config.json (validated like a file edit; written atomically)."""
        return edited(apiactions.edit(editor.create_job, body))

    @api.put(
        "/jobs/{job_id}",
        response_model=EditOut,
        responses=_errors(404, 409, 413),
        openapi_extra=job_schema,
    )
    def update_job(job_id: str, body: dict[str, Any] = a_job) -> EditOut:
        """Replace a job's definition in config.json; its id stays."""
        return edited(apiactions.edit(editor.update_job, job_id, body))

    @api.delete("/jobs/{job_id}", response_model=EditOut, responses=_errors(404, 409))
    def delete_job(job_id: str) -> EditOut:
        """Remove a job from config.json (a run in progress finishes)."""
        return edited(apiactions.edit(editor.delete_job, job_id))

    @api.post("/jobs/{job_id}/pause", response_model=EditOut, responses=_errors(404, 409))
    def pause_job(job_id: str) -> EditOut:
        """Set the job's "enabled" to false in config.json."""
        return edited(apiactions.edit(editor.set_enabled, job_id, False))

    @api.post("/jobs/{job_id}/resume", response_model=EditOut, responses=_errors(404, 409))
    def resume_job(job_id: str) -> EditOut:
        """Set the job's "enabled" to true in config.json."""
        return edited(apiactions.edit(editor.set_enabled, job_id, True))

    app.include_router(api)
    app.openapi_schema = openapi_with_job_schema(app)
    return app


def _json(model: BaseModel) -> Response:
    """A model already checked by construction, serialised once (FastAPI would validate and
    serialise a returned model again: a third of the time of a big /jobs page)."""
    return Response(model.model_dump_json(), media_type="application/json")
