"""What keeps the API the operator's alone (SPEC §8): the key, Host names, Origin, body type,
and the headers that stop framing and inline script.

Loopback is no trust boundary: any web page the operator opens can send requests to
127.0.0.1 (CSRF), and a name the attacker controls can be made to resolve there (DNS
rebinding). So every data or action endpoint needs the key, which a page on another origin
cannot read; a loopback-bound daemon answers only loopback Host names; a state-changing
request from another origin is refused even with a key; and a body must be JSON, which no
cross-site form can send. Nothing here reads the daemon's state.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from poller.api.plumbing import error_response
from poller.config.models import Settings
from poller.filemodes import make_private, tighten

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
"""The page's policy: its script and style come from files it serves, never inline."""
DOCS_CSP = "frame-ancestors 'none'"
"""Swagger UI starts itself with an inline script, so /docs only refuses to be framed."""
_COMMON_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


def key_path(settings: Settings, base_dir: Path) -> Path:
    """Where a generated key is kept: beside the SQLite file (`poller.db.api-key`); with a
    PostgreSQL store, in the config's folder (`data/poller.api-key`: each daemon its own)."""
    if settings.is_shared_store:
        return base_dir / "data" / "poller.api-key"
    db = Path(settings.state_db)
    return db.with_name(db.name + ".api-key")


def load_or_create_key(path: Path) -> str:
    """The key kept in `path`; a new random one (stored with mode 0600) when there is none.

    The same key serves every restart, so an open page, a bookmark or a Prometheus scrape
    config keeps working.
    """
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = ""
    path.parent.mkdir(parents=True, exist_ok=True)
    make_private(path)
    tighten(path)  # one written by hand may be readable by others
    if key:
        return key
    key = secrets.token_urlsafe(32)
    path.write_text(key + "\n", encoding="utf-8")
    log.info("API key generated and kept in %s", path)
    return key


def given_key(request: Request) -> str | None:
    """The key a request presents: `X-API-Key`, else `Authorization: Bearer KEY`."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def check_key(request: Request, key: str) -> None:
    """Raise 401 for no key, 403 for a wrong one (compared in constant time)."""
    given = given_key(request)
    if not given:
        raise HTTPException(
            401,
            "this endpoint needs the API key: send it as X-API-Key or Authorization: Bearer",
            {"WWW-Authenticate": 'Bearer realm="poller"'},
        )
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise HTTPException(403, "wrong API key")


def host_name(host: str) -> str:
    """The name part of a Host header, lower case: `[::1]:8000` -> `[::1]`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    name, _, port = host.rpartition(":")
    return name.rstrip(".") if name and port.isdigit() else host.rstrip(".")


class Guard:
    """ASGI middleware in front of every route: Host, Origin and body type, and the
    anti-framing headers on every answer.

    Args:
        allowed_hosts: Host names served (any port), or None to serve any (a daemon bound
            beyond loopback without `allowed_hosts`, where the key alone protects it).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None) -> None:
        self.app = app
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(host_name(h) for h in allowed_hosts)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value for name, value in scope["headers"]}
        refusal = self._refusal(scope["method"], headers)
        if refusal is not None:
            status, detail = refusal
            log.warning(
                "API request refused (%d): %s %s: %s",
                status,
                scope["method"],
                scope["path"],
                detail,
            )
            await error_response(status, detail, [])(scope, receive, _secured(send, scope))
            return
        await self.app(scope, receive, _secured(send, scope))

    def _refusal(self, method: str, headers: dict[str, bytes]) -> tuple[int, str] | None:
        host = headers.get("host", b"").decode("latin-1")
        if self.allowed_hosts is not None and host and host_name(host) not in self.allowed_hosts:
            return 400, (
                f"Host {host_name(host)!r} is not served here (DNS rebinding guard); "
                "add it to settings.api.allowed_hosts if a proxy uses that name"
            )
        origin = headers.get("origin")
        if origin is not None and method not in SAFE_METHODS:
            text = origin.decode("latin-1")
            if not self._is_own_origin(text, host):
                return 403, f"cross-origin request refused (Origin {text!r})"
        if _has_body(headers):
            media_type = headers.get("content-type", b"").decode("latin-1")
            if media_type.split(";")[0].strip().lower() != "application/json":
                return 415, "a request body must be JSON, sent as Content-Type: application/json"
        return None

    def _is_own_origin(self, origin: str, host: str) -> bool:
        """Whether `origin` is this daemon's own: the page's origin is the Host it asked."""
        if origin == "null":
            return False
        try:
            netloc = urlsplit(origin).netloc.lower()
        except ValueError:
            return False
        if netloc and netloc == host.strip().lower():
            return True
        return self.allowed_hosts is not None and (
            host_name(netloc) in self.allowed_hosts - LOOPBACK_NAMES
        )


def _has_body(headers: dict[str, bytes]) -> bool:
    length = headers.get("content-length", b"0").strip()
    return "transfer-encoding" in headers or not length.isdigit() or int(length) > 0


def _secured(send: Send, scope: Scope) -> Send:
    """`send` adding the anti-framing headers, and the page's CSP, to the answer."""
    path = scope["path"]
    # The icon is an SVG, which could carry script: it gets the page's policy too.
    policy = PAGE_CSP if path in ("/ui", "/favicon.ico") or path.startswith("/ui/") else None
    if path == "/docs" or path.startswith("/docs/"):
        policy = DOCS_CSP

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            extra = list(_COMMON_HEADERS)
            if policy is not None:
                extra.append((b"content-security-policy", policy.encode()))
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return sending
