"""What every route of the API shares: the daemon and the API's own readers of its history
(ApiContext), the key check, and how read views are computed (one at a time, answers shared).

It holds no routes; poller.api.app builds one context per app and the routers take it as a
dependency.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

from fastapi import Depends, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from poller.api.plumbing import SharedResponses
from poller.api.security import check_key

if TYPE_CHECKING:
    from poller.api.metrics import Metrics
    from poller.api.views import TotalsCache
    from poller.config.edit import ConfigEditor
    from poller.daemon import Daemon
    from poller.store import Store

SHARED_SECONDS = 1.0
"""GET /status and GET /jobs answers are shared by identical requests for this long."""
R = TypeVar("R")


@dataclass(slots=True)
class ApiContext:
    """The daemon an app serves and what its routes read it through."""

    daemon: Daemon
    config_path: Path
    api_key: str
    reader: Store
    """The API's own history connection: a slow query never holds the loop's writer."""
    totals: TotalsCache
    editor: ConfigEditor
    metrics: Metrics
    shared: SharedResponses = field(default_factory=lambda: SharedResponses(SHARED_SECONDS))
    computing: threading.Lock = field(default_factory=threading.Lock)

    def read(self, view: Callable[[], R]) -> R:
        """Compute a read view while no other request computes one.

        A waiting thread does not compete for the GIL: with several views computing at once,
        the scheduler loop would wait behind each of them in turn, and fires would be late
        (bench/bench_api.py measures it).
        """
        with self.computing:
            return view()

    def read_shared(self, key: Hashable, view: Callable[[], Response]) -> Response:
        """`read`, with identical requests (`key`) within SHARED_SECONDS sharing one answer:
        the view the pages poll, computed once however many pages are open."""
        with self.computing:
            return self.shared.get(key, self.daemon.config, view)

    def changed(self) -> None:
        """An action changed what the views show: no shared answer outlives it."""
        self.shared.clear()

    def close(self) -> None:
        self.reader.close()
        self.totals.reader.close()


def context(request: Request) -> ApiContext:
    found: ApiContext = request.app.state.context
    return found


Context = Annotated[ApiContext, Depends(context)]

# For the OpenAPI document (Swagger's Authorize button); check_key does the check.
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")
_bearer = HTTPBearer(auto_error=False, description="the API key, as Prometheus sends it")


def require_key(
    request: Request,
    ctx: Context,
    _header: Annotated[str | None, Security(_key_header)] = None,
    _bearer_key: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> None:
    """Every data and action route's dependency: the key, or 401/403."""
    check_key(request, ctx.api_key)
