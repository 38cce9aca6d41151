"""Serving the API inside the daemon: uvicorn on a thread of its own, started and stopped.

The socket is bound here, before the server thread starts, so a port in use or an exposed
address without a key stops the daemon with a clear error instead of a silent thread exit.
Here too the key is settled (configured, else generated and kept) and the Host names served.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from poller.api.app import build_app
from poller.api.security import LOOPBACK_NAMES, key_path, load_or_create_key
from poller.config.base import is_loopback
from poller.errors import PollerError

if TYPE_CHECKING:
    from poller.config.models import ApiSettings
    from poller.daemon import Daemon

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0


class ApiStartError(PollerError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the API cannot start: {reason}")


class ApiServer:
    """uvicorn serving an app on an already-bound socket, on a daemon thread."""

    def __init__(
        self, server: uvicorn.Server, sock: socket.socket, close: Callable[[], None]
    ) -> None:
        self.server = server
        self.sock = sock
        self._close = close
        self.page_address = ""  # the page's address to print, with a generated key
        self._thread = threading.Thread(target=self._serve, name="api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ApiStartError(f"the server on {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop accepting, let requests in progress finish briefly, close."""
        self.server.should_exit = True
        self._thread.join(STOP_TIMEOUT_SECONDS)
        self.sock.close()
        self._close()  # the app's history connections

    def _serve(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))


def allowed_hosts(settings: ApiSettings) -> frozenset[str] | None:
    """Host names served: loopback's and settings.api.allowed_hosts; None (any) on a daemon
    bound beyond loopback with no allowed_hosts, which the key alone protects."""
    if not is_loopback(settings.host) and not settings.allowed_hosts:
        return None
    return LOOPBACK_NAMES | frozenset(settings.allowed_hosts)


def key_of(settings: ApiSettings) -> SecretStr | None:
    """The API key; an empty one (`"${POLLER_API_KEY:-}"` with the variable unset) is none."""
    key = settings.api_key
    return key if key is not None and key.get_secret_value() else None


def check_exposure(settings: ApiSettings) -> None:
    """Refuse to serve beyond this machine without a key."""
    if key_of(settings) is None and not is_loopback(settings.host):
        raise ApiStartError(
            f"settings.api.host is {settings.host!r} but settings.api.api_key is not set; "
            'set "api_key": "${POLLER_API_KEY}" (and export POLLER_API_KEY), '
            'or bind to "127.0.0.1"'
        )


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        raise ApiStartError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    return sock


def start_api(daemon: Daemon, config_path: Path) -> ApiServer | None:
    """Serve the API when settings.api.enabled; None when it is off.

    Without settings.api.api_key, a key is generated (kept beside the state database, so
    it survives restarts) and the server's `page_address` carries it for the operator.
    Raises:
        ApiStartError: no key on a non-loopback address, the generated key cannot be
            kept, or the address cannot be bound.
    """
    settings = daemon.config.settings.api
    if not settings.enabled:
        return None
    check_exposure(settings)
    configured = key_of(settings)
    key_file = None
    if configured is None:
        key_file = key_path(daemon.config.settings, daemon.config.base_dir)
        try:
            key = load_or_create_key(key_file)
        except OSError as err:
            raise ApiStartError(
                f"no settings.api.api_key, and the generated key cannot be kept in {key_file} "
                f"({err.strerror or err}); make its folder writable or set an api_key"
            ) from None
        daemon.redactor.add(key)
    else:
        key = configured.get_secret_value()
    sock = bind(settings.host, settings.port)
    server = serve(build_app(daemon, config_path, key, allowed_hosts(settings)), sock)
    daemon.monitor.api_url = server.url  # alerts link to runs on the page
    if key_file is not None:
        server.page_address = f"{server.url}/ui#key={key}"
    log.info(
        "API listening on %s (page %s/ui, docs %s/docs); key %s",
        server.url,
        server.url,
        server.url,
        "from settings.api.api_key" if key_file is None else f"generated, in {key_file}",
    )
    return server


def serve(app: FastAPI, sock: socket.socket) -> ApiServer:
    """Serve an app from `build_app` on a bound socket; returns once it accepts requests."""
    # uvicorn logs everything of its server, its start included, as "uvicorn.error". Its
    # INFO lines only repeat "API listening on" above; what it warns of keeps its name.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=2,
    )
    server = ApiServer(uvicorn.Server(config), sock, app.state.close)
    server.start()
    return server
