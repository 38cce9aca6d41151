"""Receivers for alert and ping tests: real servers on 127.0.0.1 that record what arrives.

- `Recorder`: an HTTP server (webhooks, pings) recording each request; its answer is
  scripted per receiver: a delay, a status, or a lying body (endless, or never finished).
- `MailReceiver`: an SMTP server (aiosmtpd) recording each mail, with STARTTLS and AUTH
  when asked; `self_signed_cert` makes a certificate for it at test time.
- `unused_port`: a port nothing listens on, so connecting to it is refused.
They only receive: what a sender should do is the tests' business.
"""

from __future__ import annotations

import abc
import email
import email.policy
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

CHUNK = b"x" * 65536


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on: bound to learn a free one, then
    closed, so a connection to it is refused (until something else takes it, which a test
    run does not do in the instant it needs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_for_count(
    cond: threading.Condition, items: list[Any], count: int, timeout: float, what: str
) -> list[Any]:
    """Wait under `cond` until `items` holds `count`; a copy of it, else AssertionError."""
    deadline = time.monotonic() + timeout
    with cond:
        while len(items) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"expected {count} {what} within {timeout}s, got {len(items)}"
            cond.wait(left)
        return list(items)


class Closing(abc.ABC):
    """A receiver as a context manager: `with Recorder() as hook:` closes it at the end."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# --- HTTP -----------------------------------------------------------------------------

Answer = Literal["empty", "json", "endless", "stalled"]
"""How a Recorder answers, after its delay: "empty" (its status, no body), "json" (its
status and a small JSON object, as an API answers), "endless" (200,
then body bytes until the client hangs up), "stalled" (200 promising a body that never
comes, the connection held open until the Recorder closes)."""


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived (before any delay)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    arrived_at: float
    """time.monotonic() in this process."""

    @property
    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def text(self) -> str:
        """Everything the request carried but its path, for looking for a secret."""
        lines = [f"{name}: {value}" for name, value in self.headers.items()]
        return "\n".join([*lines, self.body.decode("utf-8", "replace")])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connecting at once must not wait on a SYN

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up is what hostile tests provoke; no traceback on stderr


class Recorder(Closing):
    """A webhook and ping receiver. `status`, `delay_seconds` and `answer` may be changed
    at any time; a delay or a stalled answer ends at once when the Recorder closes.
    `keep_alive`: answer in HTTP/1.1, keeping connections open as a real API does (an
    endless answer needs HTTP/1.0, whose body ends when the connection does)."""

    def __init__(
        self,
        *,
        status: int = 200,
        delay_seconds: float = 0.0,
        answer: Answer = "empty",
        keep_alive: bool = False,
    ) -> None:
        self.status = status
        self.delay_seconds = delay_seconds
        self.answer = answer
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_concurrent = 0
        self.body_bytes_sent = 0
        self.hung_up = threading.Event()
        """Set when a client stopped reading an endless answer and closed its connection."""
        self.cond = threading.Condition()
        self._closed = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def do_GET(self) -> None:
                recorder._handle(self)

            def do_POST(self) -> None:
                recorder._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def requests(self) -> list[tuple[str, Any]]:
        """(path, JSON body) of each request so far."""
        with self.cond:
            return [(r.path, r.json) for r in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, Any]]:
        """(path, JSON body) of the first `count` (or more) requests, once they arrived."""
        return [(r.path, r.json) for r in self.wait_received(count, timeout)]

    def wait_received(self, count: int, timeout: float = 10.0) -> list[Received]:
        return wait_for_count(self.cond, self.received, count, timeout, "requests")

    def close(self) -> None:
        self._closed.set()
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        request = Received(
            handler.command, handler.path, dict(handler.headers.items()), body, time.monotonic()
        )
        with self.cond:
            self.received.append(request)
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)
            self.cond.notify_all()
        try:
            if self.delay_seconds and self._closed.wait(self.delay_seconds):
                return
            if self.answer == "endless":
                self._endless(handler)
            elif self.answer == "stalled":
                handler.send_response(200)
                handler.send_header("Content-Length", "1000000")
                handler.end_headers()
                handler.wfile.flush()
                self._closed.wait()
            else:
                body = b'{"ok": true}' if self.answer == "json" else b""
                handler.send_response(self.status)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)
        finally:
            with self.cond:
                self.in_flight -= 1
                self.cond.notify_all()

    def _endless(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()  # HTTP/1.0 without a length: the body ends when the server closes
        try:
            while not self._closed.is_set():
                handler.wfile.write(CHUNK)
                with self.cond:
                    self.body_bytes_sent += len(CHUNK)
        except OSError:
            self.hung_up.set()


# --- SMTP -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    over_tls: bool
    arrived_at: float


class MailReceiver(Closing):
    """An SMTP server on 127.0.0.1 recording every mail. With `tls` (certificate, key) it
    offers STARTTLS and requires it; with `credentials` it requires AUTH (over TLS only)
    and accepts just that username and password."""

    def __init__(
        self,
        *,
        tls: tuple[Path, Path] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.mails: list[Mail] = []
        self.logins: list[tuple[str, str]] = []
        self.cond = threading.Condition()
        self.host = "127.0.0.1"
        self.port = unused_port()
        options: dict[str, Any] = {}
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            options.update(tls_context=context, require_starttls=True)
        if credentials is not None:
            options.update(authenticator=self._authenticator(credentials), auth_required=True)
        self._controller = Controller(self, hostname=self.host, port=self.port, **options)
        self._controller.start()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mail = Mail(
            str(envelope.mail_from),
            tuple(envelope.rcpt_tos),
            message,
            raw,
            session.ssl is not None,
            time.monotonic(),
        )
        with self.cond:
            self.mails.append(mail)
            self.cond.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Mail]:
        return wait_for_count(self.cond, self.mails, count, timeout, "mails")

    def close(self) -> None:
        self._controller.stop()

    def _authenticator(self, credentials: tuple[str, str]) -> Callable[..., AuthResult]:
        def authenticate(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            if not isinstance(data, LoginPassword):
                return AuthResult(success=False, handled=False)
            login = (data.login.decode(), data.password.decode())
            with self.cond:
                self.logins.append(login)
            return AuthResult(success=login == credentials)

        return authenticate


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, made now by the openssl CLI;
    skips the test where openssl is missing. Valid from now for two days."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the STARTTLS test")
    cert, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key
