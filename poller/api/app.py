"""The HTTP API of a running daemon (SPEC §8), assembled: one FastAPI app from the routers
(status, jobs, runs, actions, metrics, page), the plumbing and the guard.

The API reads the daemon's state and its own history connection, hands runs to the daemon's
pool, and writes job changes to config.json (the daemon's reload applies them); it never
runs a chain or touches the scheduler itself. Serving it is poller.api.server's work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI

from poller import __version__
from poller.api import actions, jobs, metrics, page, plumbing, runs, security, status
from poller.api.context import ApiContext, require_key
from poller.api.views import TotalsCache
from poller.config.edit import ConfigEditor

if TYPE_CHECKING:
    from poller.daemon import Daemon

MAX_BODY_BYTES = 64 * 1024


def build_app(
    daemon: Daemon, config_path: Path, api_key: str, allowed_hosts: frozenset[str] | None
) -> FastAPI:
    """The API of `daemon`; also starts counting the daemon's runs for /metrics.

    Args:
        api_key: what every data and action route asks for.
        allowed_hosts: the Host names served, or None for any (poller.api.security).
    """
    totals = TotalsCache(daemon.store.open_reader())  # a slow count blocks no read
    counted = metrics.Metrics(daemon, totals)
    daemon.executor.on_result = counted.observe
    daemon.on_skipped = counted.observe
    app = FastAPI(
        title="Poller",
        version=__version__,
        summary="Status, jobs, runs and actions of a running Poller daemon.",
        docs_url=None,  # poller.api.page serves /docs from this process: no internet needed
        redoc_url=None,
    )
    context = ApiContext(
        daemon=daemon,
        config_path=config_path,
        api_key=api_key,
        reader=daemon.store.open_reader(),
        totals=totals,
        editor=ConfigEditor(config_path),
        metrics=counted,
    )
    app.state.context = context
    app.state.close = context.close
    page.mount_files(app)
    plumbing.install(app, MAX_BODY_BYTES)
    app.add_middleware(security.Guard, allowed_hosts=allowed_hosts)  # outermost
    app.include_router(status.health)
    app.include_router(page.router)
    keyed = [Depends(require_key)]
    refusals = plumbing.errors(*plumbing.KEYED_ERRORS)
    for router in (status.router, jobs.router, runs.router, metrics.router, actions.router):
        app.include_router(router, dependencies=keyed, responses=refusals)
    app.openapi_schema = plumbing.openapi_with_job_schema(app)
    return app
