"""The API's HTTP plumbing: one error shape for every refusal (config-style problems) and
the documented error answers, OPTIONS and 405 naming every method of a path, the request
body as a JSON object, the body size limit, the job bodies' schemas in the OpenAPI
components, models answered as JSON once, and read responses shared by identical requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from poller.api.models import ErrorOut, ProblemOut
from poller.config.constraints import JOB_IDENTITY
from poller.config.models import Job
from poller.errors import Problem
from poller.jsondepth import MAX_DEPTH, too_deep_at

ERROR_TEXTS = {
    400: "Host name not served (DNS rebinding guard)",
    401: "No API key (X-API-Key or Authorization: Bearer)",
    403: "Wrong API key, or a cross-origin request",
    404: "No such job or run",
    409: "Conflict",
    413: "Body too large",
    415: "A body that is not application/json",
    422: "Invalid parameters or body",
    503: "Stopped",
}
KEYED_ERRORS = (400, 401, 403, 415, 422)
"""What any route behind the key may answer."""
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
"""What a 405 or OPTIONS tries at a path to say which are allowed there."""


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, in the one error shape."""
    return {code: {"model": ErrorOut, "description": ERROR_TEXTS[code]} for code in codes}


def json_response(model: BaseModel) -> Response:
    """A model already checked by construction, serialised once (FastAPI would validate and
    serialise a returned model again: a third of the time of a big /jobs page)."""
    return Response(model.model_dump_json(), media_type="application/json")


class SharedResponses:
    """Responses of read views, shared by identical requests for `seconds`.

    Many open pages poll the same views; computed for each, they would hold the GIL for
    each, and the scheduler loop would wait behind them (bench/bench_api.py measures it).
    A shared response is never older than `seconds`, nor from an older config (`source`).
    """

    def __init__(
        self, seconds: float, max_entries: int = 256, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._now = now
        self._entries: dict[Hashable, tuple[float, object, Response]] = {}
        self._generation = 0  # clear() counts up; a response computed across one is not kept
        self._lock = threading.Lock()

    def get(self, key: Hashable, source: object, compute: Callable[[], Response]) -> Response:
        """The response for `key`: the shared one while it is fresh, else `compute()`."""
        now = self._now()
        with self._lock:
            found = self._entries.get(key)
            generation = self._generation
        if found is not None and now - found[0] < self.seconds and found[1] is source:
            kept = found[2]
            return Response(kept.body, kept.status_code, media_type=kept.media_type)
        response = compute()
        with self._lock:
            if self._generation == generation:  # else an action came while computing
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key] = (now, source, response)
        return response

    def clear(self) -> None:
        """Forget every response, and any being computed: an action changed what they show."""
        with self._lock:
            self._generation += 1
            self._entries.clear()


def install(app: FastAPI, max_body_bytes: int) -> None:
    """Add the body limit and the error handlers to `app`."""
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(HeadAsGet)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ProblemError, _problem_error)


async def job_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a 422 naming what is wrong."""
    raw = await request.body()
    text = raw.decode("utf-8", errors="replace")
    deep = too_deep_at(text)
    if deep is not None:
        expected = f"nested more than {MAX_DEPTH} levels deep (at character {deep})"
        raise ProblemError(422, "invalid request", (Problem("request", "body", expected),))
    try:
        body = json.loads(raw)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError alike
        raise ProblemError(
            422, "invalid request", (Problem("request", "body", f"invalid JSON: {err}"),)
        ) from None
    if not isinstance(body, dict):
        expected = "expected a JSON object (one job)"
        problem = Problem("request", "body", expected, value=body, has_value=True)
        raise ProblemError(422, "invalid request", (problem,))
    return body


class ProblemError(Exception):
    def __init__(self, status: int, detail: str, problems: tuple[Problem, ...]) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problems = problems


def error_response(status: int, detail: str, problems: list[ProblemOut]) -> JSONResponse:
    body = ErrorOut(detail=detail, problems=problems)
    return JSONResponse(body.model_dump(mode="json"), status)


def _allowed_methods(request: Request, refusal: HTTPException) -> list[str]:
    """Every method answered at the path of a request refused with 405, and OPTIONS, sorted.

    The router's 405 names only the methods of the first route it found at the path, so
    each method is tried against every route; a mounted app (static files) names its own.
    """
    scope = request.scope
    top = {**scope, "root_path": scope.get("app_root_path", scope.get("root_path", ""))}
    routes = request.app.router.routes
    if any(isinstance(route, Mount) and route.matches(top)[0] is Match.FULL for route in routes):
        given = (refusal.headers or {}).get("Allow", "")
        methods = {method.strip() for method in given.split(",") if method.strip()}
    else:
        methods = {
            method
            for method in HTTP_METHODS
            if any(route.matches({**top, "method": method})[0] is Match.FULL for route in routes)
        }
    if "GET" in methods:
        methods.add("HEAD")  # HeadAsGet answers it
    return sorted({*methods, "OPTIONS"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return _method_not_allowed(request, exc)
    response = error_response(exc.status_code, str(exc.detail), [])
    response.headers.update(exc.headers or {})
    return response


def _method_not_allowed(request: Request, exc: HTTPException) -> Response:
    """405 with `Allow` naming every method of the path (the router names only those of the
    first route it found there); OPTIONS, which no route has, is answered here with 204.

    OPTIONS needs no key: the methods are in the open /openapi.json. It adds no
    Access-Control-* header, so a cross-site preflight is still refused by the browser.
    """
    allow = {"Allow": ", ".join(_allowed_methods(request, exc))}
    if request.method == "OPTIONS":
        return Response(status_code=204, headers=allow)
    response = error_response(405, str(exc.detail), [])
    response.headers.update(allow)
    return response


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """Parameter and body errors, in the shape of config problems (`query.limit: ...`)."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        kind, message = error["type"], str(error["msg"])
        if kind == "json_invalid":
            reason = error.get("ctx", {}).get("error", "cannot be parsed")
            at = loc[1] if len(loc) > 1 else "0"
            problem = Problem("request", "body", f"invalid JSON: {reason} (at character {at})")
        elif kind == "missing":
            problem = Problem("request", ".".join(loc), "required field is missing")
        else:
            expected = "expected " + message.removeprefix("Input should be ")
            value = error.get("input")
            problem = Problem("request", ".".join(loc), expected, value=value, has_value=True)
        problems.append(ProblemOut.model_validate(problem.as_dict()))
    return error_response(422, "invalid request", problems)


async def _problem_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    problems = [ProblemOut.model_validate(p.as_dict()) for p in exc.problems]
    return error_response(exc.status, exc.detail, problems)


def openapi_with_job_schema(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document with config.json's Job model under components, for the bodies:
    Job for a new one, JobReplacement for PUT (which may leave the id to its URL)."""
    app.openapi_schema = None
    schema = app.openapi()
    job = Job.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(job.pop("$defs", {}))
    components["Job"] = job
    components["JobReplacement"] = {
        **{key: value for key, value in job.items() if key not in JOB_IDENTITY},
        "title": "JobReplacement",
    }
    return schema


class HeadAsGet:
    """HEAD answered as the GET of the same path, without its body (RFC 9110 9.3.2): uptime
    checkers ask `/health` with HEAD, and FastAPI routes know only GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, counted as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = error_response(413, f"request body over {self.max_bytes} bytes", [])
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            # Raised inside the body read: FastAPI passes an HTTPException through, and
            # the exception handler turns it into the 413 response.
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)
