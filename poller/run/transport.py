"""One HTTP exchange and the retry loop around it, shared by the platform client and plain calls.

Translates every requests exception into an AttemptError and, once retries are spent, into
a CallError; builds secret-free body excerpts; sends no credential across a redirect to
another host. Auth and URLs are poller.run.client's business.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import requests.adapters
import urllib3

from poller.clock import Clock
from poller.errors import CallError, RunStoppedError
from poller.logs import run_logger
from poller.redaction import Redactor
from poller.run.retry import RetryPolicy, is_retryable_status, retry_after_seconds, retry_delay
from poller.timeformat import ms_since, seconds_text

log = run_logger(__name__)

EXCERPT_CHARS = 200
READ_CHUNK_BYTES = 64 * 1024
KEPT_ON_REDIRECT = frozenset(
    {
        "accept",
        "accept-encoding",
        "connection",
        "content-length",
        "content-type",
        "idempotency-key",
        "transfer-encoding",
        "user-agent",
        "x-request-id",
    }
)
"""The only headers a redirect to another host still carries: none can be a credential."""


class Session(requests.Session):
    """A requests.Session that sends no configured header or cookie to another host.

    requests strips only `Authorization` when a redirect changes host; an api-key header,
    an environment's `headers` and cookies would follow it. Here every header but those in
    KEPT_ON_REDIRECT is dropped then (a same-host redirect, or http to https on the same
    host, keeps them all).

    It keeps up to `connections` idle connections per host. requests keeps 10: calls beyond
    that many at once (a for_each with max_parallel 16) would each open a connection and
    close it after, with a warning in the log.
    """

    def __init__(self, connections: int = requests.adapters.DEFAULT_POOLSIZE) -> None:
        super().__init__()
        size = max(connections, requests.adapters.DEFAULT_POOLSIZE)
        for prefix in ("https://", "http://"):
            self.mount(prefix, requests.adapters.HTTPAdapter(pool_maxsize=size))

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        # types-requests leaves these two hooks unannotated; here they get their types.
        rebuild: Callable[[requests.PreparedRequest, requests.Response], None] = (
            super().rebuild_auth
        )
        is_other_host: Callable[[str, str], bool] = self.should_strip_auth
        rebuild(prepared_request, response)
        if is_other_host(response.request.url or "", prepared_request.url or ""):
            for name in list(prepared_request.headers):
                if name.lower() not in KEPT_ON_REDIRECT:
                    del prepared_request.headers[name]


@dataclass(frozen=True, slots=True)
class CallResult:
    """The answer of one logical call (after its retries)."""

    output: dict[str, Any]
    attempts: int
    status: int


class AttemptError(Exception):
    """One failed attempt, as the retry loop sees it; it never leaves this module and
    poller.run.client."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        excerpt: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
        login_generation: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.excerpt = excerpt
        self.retryable = retryable
        self.retry_after = retry_after
        self.login_generation = login_generation  # set on a 401 that a new login may cure


@dataclass(frozen=True, slots=True)
class Answer:
    """A response read in full (so a connection broken mid-body fails inside `send`)."""

    status: int
    phrase: str
    headers: Mapping[str, str]
    content: bytes
    cookie_values: tuple[str, ...] = ()  # values set by this response (session credentials)


@dataclass(frozen=True, slots=True)
class Call:
    """What the retry loop needs to know about one logical call."""

    environment: str
    target: str  # integration id, or a URL without query for plain calls
    policy: RetryPolicy
    timeout_seconds: float
    deadline: float | None
    clock: Clock
    rng: random.Random | None
    host: str  # where the call goes, for the log


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    timeout: float,
    max_bytes: int,
    json_body: Any = None,
    params: Mapping[str, Any] | None = None,
) -> Answer:
    """One HTTP exchange; translates every requests exception into an AttemptError.

    `timeout` bounds the whole exchange, body included: requests alone bounds only each
    socket read, so a body trickling a byte a second would never time out. The body is
    read with `max_bytes` as a cap on its decoded size (a gzip bomb stops there).
    """
    deadline = time.monotonic() + timeout
    try:
        response = session.request(
            method,
            url,
            headers=dict(headers),
            params=dict(params or {}),
            json=json_body,
            timeout=(timeout, timeout),
            stream=True,
        )
    except requests.Timeout:
        raise AttemptError(f"timed out after {timeout:.3g} s", retryable=True) from None
    except requests.ConnectionError as err:
        raise AttemptError(f"connection failed ({_root_cause(err)})", retryable=True) from None
    except requests.RequestException as err:
        raise AttemptError(f"request not sent ({type(err).__name__})") from None
    try:
        content = _read_body(response, deadline, timeout, max_bytes)
    finally:
        response.close()
    cookies = tuple(cookie.value or "" for cookie in response.cookies)
    return Answer(response.status_code, response.reason or "", response.headers, content, cookies)


def _read_body(
    response: requests.Response, deadline: float, timeout: float, max_bytes: int
) -> bytes:
    """The decoded body, read in pieces until `deadline` (time.monotonic()) and `max_bytes`."""
    raw = response.raw
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            # Looked up on each read: once the body is in, urllib3 gives the connection
            # back to its pool (connection None), which may close it or hand it to a
            # thread of its own.
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if sock is not None:
                sock.settimeout(remaining)  # so one slow read cannot outlast the deadline
            chunk = raw.read1(READ_CHUNK_BYTES, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > max_bytes:
                raise AttemptError(
                    f"response body over {max_bytes:,} bytes (max_response_bytes)",
                    status=response.status_code,
                )
            chunks.append(chunk)
    except (TimeoutError, urllib3.exceptions.ReadTimeoutError):
        reason = f"timed out after {timeout:.3g} s reading the response"
        raise AttemptError(reason, status=response.status_code, retryable=True) from None
    except (urllib3.exceptions.HTTPError, OSError):
        raise AttemptError("connection closed mid-response", retryable=True) from None


def _root_cause(err: BaseException) -> str:
    """The class name of the innermost cause (urllib3 nests them in args and `reason`)."""
    current = err
    for _ in range(8):
        nested = getattr(current, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in current.args if isinstance(a, BaseException)), None)
        nested = nested or current.__cause__
        if nested is None:
            break
        current = nested
    return type(current).__name__


def excerpt(content: bytes, redactor: Redactor) -> str:
    """A short one-line, secret-free excerpt of a response body for errors."""
    # Redact before cutting, so the cut cannot leave the start of a secret behind.
    text = content[: 16 * EXCERPT_CHARS].decode("utf-8", errors="replace")
    text = " ".join(redactor.text(text).split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def check_status(answer: Answer, redactor: Redactor, clock: Clock) -> None:
    """Raise an AttemptError for any non-2xx answer: retryable for 429 and 5xx only."""
    if 200 <= answer.status < 300:
        return
    retryable = is_retryable_status(answer.status)
    raise AttemptError(
        answer.phrase or "error",
        status=answer.status,
        excerpt=excerpt(answer.content, redactor),
        retryable=retryable,
        retry_after=(
            retry_after_seconds(answer.headers.get("Retry-After"), clock.now())
            if retryable
            else None
        ),
    )


def with_retries(
    call: Call,
    attempt: Callable[[float], tuple[int, dict[str, Any]]],
    invalidate_login: Callable[[int], None] | None = None,
) -> CallResult:
    """Run `attempt(timeout)` until it succeeds, fails for good, or retries run out.

    A 401 that a new login may cure is repeated once without counting against retries.
    """
    attempts, failures, relogged = 0, 0, False
    last: AttemptError | None = None
    while True:
        timeout = call.timeout_seconds
        if call.deadline is not None:
            timeout = min(timeout, call.deadline - time.monotonic())
            if timeout <= 0:
                reason = f"{last.reason}; " if last else ""
                raise CallError(
                    call.environment,
                    call.target,
                    last.status if last else None,
                    attempts,
                    last.excerpt if last else "",
                    reason=reason + "run timeout reached",
                    host=call.host,
                )
        attempts += 1
        started = time.monotonic()
        try:
            status, output = attempt(timeout)
        except AttemptError as failure:
            last = failure
            log.debug(
                "%s %s attempt %d: %s %s",
                call.environment,
                call.target,
                attempts,
                failure.status or "-",
                failure.reason,
            )
            if failure.login_generation is not None and invalidate_login and not relogged:
                relogged = True
                invalidate_login(failure.login_generation)
                log.info("%s %s: HTTP 401, logging in again", call.environment, call.target)
                continue
            if failure.login_generation is not None:
                failure.reason += "; still unauthorized after logging in again"
            if not failure.retryable:
                raise _call_error(call, failure, attempts) from None
            failures += 1
            delay = retry_delay(call.policy, failures, failure.retry_after, call.rng)
            if delay is None:
                raise _call_error(call, failure, attempts) from None
            if call.deadline is not None and time.monotonic() + delay >= call.deadline:
                failure.reason += "; the run timeout leaves no time to retry"
                raise _call_error(call, failure, attempts) from None
            log.warning(
                "%s %s at %s: attempt %d failed (%s %s); retry %d of %d in %s",
                call.environment,
                call.target,
                call.host,
                attempts,
                failure.status or "-",
                failure.reason,
                failures,
                call.policy.retries,
                seconds_text(delay),
            )
            # Only a stop ends the backoff early (a reload does not: every waiting retry
            # would then hit a failing platform together).
            if call.clock.sleep(delay):
                raise RunStoppedError(call.environment, call.target, attempts) from None
            continue
        log.debug(
            "%s %s attempt %d: %d in %d ms",
            call.environment,
            call.target,
            attempts,
            status,
            ms_since(started),
        )
        return CallResult(output, attempts, status)


def _call_error(call: Call, failure: AttemptError, attempts: int) -> CallError:
    return CallError(
        call.environment,
        call.target,
        failure.status,
        attempts,
        failure.excerpt,
        failure.reason,
        host=call.host,
    )
