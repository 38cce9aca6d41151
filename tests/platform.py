"""A stand-in integration platform for tests: a real HTTP server on 127.0.0.1 with scripted faults.

In tests use the `platform` fixture (tests/conftest.py); elsewhere `with PlatformServer() as
server:` or, in a subprocess, `python -m tests.platform --port N` (prints
"platform listening on URL" and serves until SIGTERM/SIGINT).

Endpoints (HTTP/1.1, keep-alive, JSON unless said otherwise):
- `POST /login` {"username", "password"}: session login; sets cookie `platform_session`;
  401 on wrong credentials.
- `POST /auth/token` {"username", "password"}: bearer login; answers
  {"token": ..., "expires_in": token_ttl_seconds}, the token nested at the dotted
  `token_field` (default "token"); 401 on wrong credentials.
- `ANY /integrations/{id}/execute`: answers {"integration_id": id, "input": <JSON body>,
  "count": n}, n counting the requests for that id (1-based). Credentials presented (session
  cookie, `Authorization: Bearer`/`Basic`, `X-API-Key`) must be valid, else 401; a request
  without any passes unless `require_auth` is set. With `echo_headers` the answer also has
  "headers": every request header, credentials included (a platform that lies or leaks).
- `ANY /echo`: {"method", "path", "query", "json"} of the request (no auth check).
- `ANY /json/...`: the document registered with `serve_json(path, value, status)`, else 404.
- `GET /text?body=...`: that text (default "hello") as text/plain.
- `/_control/...` (for subprocess users; not recorded): `GET requests` (the recorded
  requests as JSON), `POST script` {"key", "behaviours": [Behaviour fields...]},
  `POST reset`, `POST expire`.

Scripting: `server.script(key, *behaviours)` queues behaviours for a key, an integration id
or a path such as "/auth/token" or "/echo". Each request with that key consumes the first
queued behaviour (`times` requests each, None = forever); with the queue empty the endpoint
answers normally. A behaviour may wait (`slow`), revoke every session and token first
(`expire`: a request with old credentials then gets 401), and then either answer normally
(status None) or answer with its own status and body, or break the connection (`drop`).
Factories: `fail`, `always`, `rate_limited` (+ `http_date`), `slow`, `expire`,
`invalid_json`, `drop`, `reply`.

Every request (logins included, control requests not) is recorded as a `Recorded` in
`server.requests` (a snapshot list; thread-safe; `peer_port` tells connections apart);
`calls(id)` and `logins()` filter it and `wait_for_requests(n, timeout)` waits for it.
`server.reset()` forgets requests, scripts, sessions, tokens and documents; the attributes
`password`, `require_auth`, `token_ttl_seconds` and `token_field` may be changed at any time.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from requests.structures import CaseInsensitiveDict

SESSION_COOKIE = "platform_session"
EXECUTE_RE = re.compile(r"^/integrations/([^/]+)/execute$")


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request the platform received."""

    method: str
    path: str
    query: dict[str, str]
    headers: CaseInsensitiveDict[str]
    body: Any  # the parsed JSON body, or None when empty or not JSON
    raw: bytes
    at: float  # time.monotonic() on arrival
    integration_id: str | None = None
    peer_port: int = 0  # the client's port: one per kept-alive connection

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": dict(self.headers),
            "body": self.body,
            "at": self.at,
            "integration_id": self.integration_id,
            "peer_port": self.peer_port,
        }


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What the platform does for the next `times` requests of a key (None: forever)."""

    status: int | None = None  # None: answer as the endpoint normally would
    json_body: Any = None
    raw_body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delay_seconds: float = 0.0
    times: int | None = 1
    expire: bool = False
    drop: bool = False
    drop_before_headers: bool = False


def fail(times: int = 1, status: int = 503) -> Behaviour:
    """Answer `status` (default 503) `times` times, then normally."""
    return Behaviour(status=status, json_body={"error": f"scripted {status}"}, times=times)


def always(status: int = 503, json_body: Any = None) -> Behaviour:
    """Answer `status` forever."""
    body = json_body if json_body is not None else {"error": f"scripted {status}"}
    return Behaviour(status=status, json_body=body, times=None)


def rate_limited(retry_after: str, times: int = 1) -> Behaviour:
    """429 with a `Retry-After` header (seconds, or an HTTP-date from `http_date`)."""
    return Behaviour(
        status=429,
        json_body={"error": "slow down"},
        headers=(("Retry-After", retry_after),),
        times=times,
    )


def http_date(seconds_from_now: float, now: datetime | None = None) -> str:
    """An HTTP-date `seconds_from_now` after `now` (default: the real time)."""
    base = now or datetime.now(UTC)
    return format_datetime(base + timedelta(seconds=seconds_from_now), usegmt=True)


def slow(delay_seconds: float, times: int = 1) -> Behaviour:
    """Wait `delay_seconds`, then answer normally."""
    return Behaviour(delay_seconds=delay_seconds, times=times)


def expire(times: int = 1) -> Behaviour:
    """Revoke every session and token, then answer normally (so old credentials get 401)."""
    return Behaviour(expire=True, times=times)


def invalid_json(times: int = 1, status: int = 200) -> Behaviour:
    """Answer with a body that claims to be JSON and is not."""
    return Behaviour(status=status, raw_body=b'{"broken": ', times=times)


def drop(times: int = 1, before_headers: bool = False) -> Behaviour:
    """Close the connection mid-response (or before any response with `before_headers`)."""
    return Behaviour(drop=True, drop_before_headers=before_headers, times=times)


def reply(
    status: int = 200,
    json_body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    times: int | None = 1,
) -> Behaviour:
    """Answer `status` with `json_body` (and headers)."""
    return Behaviour(
        status=status,
        json_body=json_body,
        headers=tuple((headers or {}).items()),
        times=times,
    )


@dataclass(slots=True)
class _State:
    """Everything the server remembers; guarded by PlatformServer._lock."""

    recorded: list[Recorded] = field(default_factory=list)
    scripts: dict[str, list[list[Any]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)
    tokens: set[str] = field(default_factory=set)
    documents: dict[str, tuple[int, Any]] = field(default_factory=dict)


class PlatformServer:
    """The stand-in platform; start() / stop() or use it as a context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "alice",
        password: str = "platform-password-31",
        api_key: str = "platform-api-key-73",
        token_ttl_seconds: float = 3600,
        token_field: str = "token",
        require_auth: bool = False,
        echo_headers: bool = False,
    ) -> None:
        self.username = username
        self.echo_headers = echo_headers
        self.password = password
        self.api_key = api_key
        self.token_ttl_seconds = token_ttl_seconds
        self.token_field = token_field
        self.require_auth = require_auth
        self._lock = threading.Condition()
        self._state = _State()
        self._stopping = threading.Event()
        self._server = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> PlatformServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="platform",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # cuts short any scripted delay
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> PlatformServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what tests read and script ---------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._state.recorded)

    def calls(self, integration_id: str) -> list[Recorded]:
        """The execute requests received for one integration id."""
        return [r for r in self.requests if r.integration_id == integration_id]

    def logins(self) -> list[Recorded]:
        """The login requests received (session and bearer)."""
        return [r for r in self.requests if r.path in ("/login", "/auth/token")]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least `count` requests arrived; False if `timeout` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._state.recorded) >= count, timeout)

    def script(self, key: str, *behaviours: Behaviour) -> None:
        """Queue behaviours for an integration id or a path (appends to any queued)."""
        with self._lock:
            queue = self._state.scripts.setdefault(key, [])
            queue.extend([b, b.times] for b in behaviours)

    def issued(self) -> set[str]:
        """Every session cookie value and bearer token handed out so far."""
        with self._lock:
            return self._state.sessions | self._state.tokens

    def serve_json(self, path: str, value: Any, status: int = 200) -> None:
        """Answer requests to `path` (under /json/) with `value`."""
        with self._lock:
            self._state.documents[path] = (status, value)

    def expire_auth(self) -> None:
        """Revoke every session and token now."""
        with self._lock:
            self._state.sessions.clear()
            self._state.tokens.clear()

    def reset(self) -> None:
        """Forget requests, scripts, counts, sessions, tokens and documents."""
        with self._lock:
            self._state = _State()

    # --- used by the handler ----------------------------------------------------------

    def _record(self, request: Recorded, key: str) -> tuple[int, Behaviour | None]:
        with self._lock:
            self._state.recorded.append(request)
            self._state.counts[key] = count = self._state.counts.get(key, 0) + 1
            self._lock.notify_all()
            queue = self._state.scripts.get(key)
            if not queue:
                return count, None
            behaviour, remaining = queue[0]
            if remaining is not None:
                if remaining <= 1:
                    queue.pop(0)
                else:
                    queue[0][1] = remaining - 1
            return count, behaviour

    def _login(self, body: Any, kind: str) -> str | None:
        if not isinstance(body, dict) or (body.get("username"), body.get("password")) != (
            self.username,
            self.password,
        ):
            return None
        secret = f"{kind}-{uuid.uuid4().hex}"
        with self._lock:
            (self._state.sessions if kind == "session" else self._state.tokens).add(secret)
        return secret

    def _document(self, path: str) -> tuple[int, Any] | None:
        with self._lock:
            return self._state.documents.get(path)

    def _is_authorized(self, headers: CaseInsensitiveDict[str]) -> bool:
        with self._lock:
            sessions, tokens = set(self._state.sessions), set(self._state.tokens)
        presented: list[bool] = []
        cookie = SimpleCookie(headers.get("Cookie", ""))
        if SESSION_COOKIE in cookie:
            presented.append(cookie[SESSION_COOKIE].value in sessions)
        scheme, _, credential = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            presented.append(credential in tokens)
        elif scheme.lower() == "basic":
            expected = f"{self.username}:{self.password}".encode()
            presented.append(base64.b64decode(credential + "==") == expected)
        if "X-API-Key" in headers:
            presented.append(headers["X-API-Key"] == self.api_key)
        return all(presented) if presented else not self.require_auth

    def _control(self, action: str, body: Any) -> tuple[int, Any]:
        if action == "requests":
            return 200, [r.as_dict() for r in self.requests]
        if action == "reset":
            self.reset()
            return 200, {"ok": True}
        if action == "expire":
            self.expire_auth()
            return 200, {"ok": True}
        if action == "script" and isinstance(body, dict):
            behaviours = []
            for item in body.get("behaviours", []):
                fields = dict(item)
                if "headers" in fields:
                    fields["headers"] = tuple(tuple(h) for h in fields["headers"])
                if isinstance(fields.get("raw_body"), str):
                    fields["raw_body"] = fields["raw_body"].encode()
                behaviours.append(Behaviour(**fields))
            self.script(str(body["key"]), *behaviours)
            return 200, {"ok": True}
        return 404, {"error": f"no control action {action!r}"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        platform: PlatformServer,
    ) -> None:
        self.platform = platform
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or disconnect on purpose are part of the tests.
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError, OSError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `requests`, not stderr."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _handle(self) -> None:
        platform = self.server.platform
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if parts.path.startswith("/_control/"):
            self._send_json(*platform._control(parts.path.removeprefix("/_control/"), body))
            return
        match = EXECUTE_RE.match(parts.path)
        integration_id = match.group(1) if match else None
        request = Recorded(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query)),
            headers=CaseInsensitiveDict(dict(self.headers.items())),
            body=body,
            raw=raw,
            at=time.monotonic(),
            integration_id=integration_id,
            peer_port=int(self.client_address[1]),
        )
        count, behaviour = platform._record(request, integration_id or parts.path)
        if behaviour is not None:
            if behaviour.delay_seconds and platform._stopping.wait(behaviour.delay_seconds):
                return
            if behaviour.expire:
                platform.expire_auth()
            if behaviour.drop:
                self._drop(behaviour.drop_before_headers)
                return
            if behaviour.status is not None:
                payload = behaviour.raw_body
                if payload is None:
                    payload = json.dumps(behaviour.json_body).encode()
                self._send(behaviour.status, payload, "application/json", behaviour.headers)
                return
        self._answer(request, count)

    def _answer(self, request: Recorded, count: int) -> None:
        platform = self.server.platform
        path = request.path
        if path in ("/login", "/auth/token") and request.method == "POST":
            kind = "session" if path == "/login" else "bearer"
            secret = platform._login(request.body, kind)
            if secret is None:
                self._send_json(401, {"error": "bad username or password"})
            elif kind == "session":
                cookie = f"{SESSION_COOKIE}={secret}; Path=/; HttpOnly"
                self._send_json(200, {"ok": True}, (("Set-Cookie", cookie),))
            else:
                answer: dict[str, Any] = {"expires_in": platform.token_ttl_seconds}
                *parents, leaf = platform.token_field.split(".")
                value: Any = secret
                if leaf.lstrip("-").isdigit():  # "tokens.-1": the last of a list, after a stale one
                    *parents, leaf = parents
                    value = ["stale-token", secret]
                node = answer
                for name in parents:
                    node = node.setdefault(name, {})
                node[leaf] = value
                self._send_json(200, answer)
        elif request.integration_id is not None:
            if not platform._is_authorized(request.headers):
                self._send_json(401, {"error": "unauthorized"})
                return
            echo = {"integration_id": request.integration_id, "input": request.body}
            if platform.echo_headers:  # a platform that gives back what it was sent
                echo["headers"] = dict(request.headers)
            self._send_json(200, {**echo, "count": count})
        elif path == "/echo":
            echo = {"method": request.method, "path": path, "query": request.query}
            self._send_json(200, {**echo, "json": request.body})
        elif path.startswith("/json/") and (document := platform._document(path)):
            self._send_json(*document)
        elif path == "/text":
            text = request.query.get("body", "hello")
            self._send(200, text.encode(), "text/plain; charset=utf-8")
        else:
            self._send_json(404, {"error": f"no such endpoint {request.method} {path}"})

    def _send_json(
        self, status: int, value: Any, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._send(status, json.dumps(value).encode(), "application/json", headers)

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _drop(self, before_headers: bool) -> None:
        if not before_headers:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "4096")
            self.end_headers()
            self.wfile.write(b'{"partial": "')
            self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in platform until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.platform", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--username", default="alice")
    parser.add_argument("--password", default="platform-password-31")
    parser.add_argument("--api-key", default="platform-api-key-73")
    parser.add_argument("--token-ttl-seconds", type=float, default=3600)
    parser.add_argument("--token-field", default="token")
    parser.add_argument("--require-auth", action="store_true")
    args = parser.parse_args(argv)
    server = PlatformServer(
        host=args.host,
        port=args.port,
        username=args.username,
        password=args.password,
        api_key=args.api_key,
        token_ttl_seconds=args.token_ttl_seconds,
        token_field=args.token_field,
        require_auth=args.require_auth,
    )
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with server:
        sys.stdout.write(f"platform listening on {server.url}\n")
        sys.stdout.flush()
        while not done.wait(1.0):
            pass
    return 0


__all__ = [
    "Behaviour",
    "PlatformServer",
    "Recorded",
    "always",
    "drop",
    "expire",
    "fail",
    "http_date",
    "invalid_json",
    "rate_limited",
    "reply",
    "slow",
]

if __name__ == "__main__":
    raise SystemExit(main())
