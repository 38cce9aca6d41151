"""`app.py status`: the daemons sharing the state database (SPEC §11).

It reads only the database, beside running daemons, so it needs none of their secrets but
a PostgreSQL URL's own ${NAME}.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from poller.commands.options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigSource,
    load,
    open_history,
    say,
    store_error,
    table,
    when,
)
from poller.config.load import load_settings
from poller.config.models import Settings
from poller.errors import ConfigError
from poller.executors.messages import WORKERS_NOTE
from poller.store import StoreError


def cmd_status(source: ConfigSource, args: argparse.Namespace) -> int:
    loaded = load(source, unset_ok=True)
    if isinstance(loaded, str):
        say(loaded)
        return EXIT_USAGE
    try:
        settings = (
            load_settings(source.path) if isinstance(loaded, ConfigError) else loaded.settings
        )
    except ConfigError as err:
        say(str(err))
        return EXIT_USAGE
    try:
        store = open_history(settings)
        daemons = [] if store is None else store.daemons()
        seen = None if store is None else store.note(*WORKERS_NOTE)
    except StoreError as err:
        return store_error(err)
    if store is not None:
        store.close()
    kind = "postgresql" if settings.is_shared_store else "sqlite"
    workers = seen if isinstance(seen, list) and settings.executor.type == "kafka" else []
    if args.json:
        body = {
            "store": kind,
            "state_db": settings.state_where,
            "daemons": daemons,
            "executor": settings.executor.type,
            "workers": workers,
        }
        print(json.dumps(body, indent=2))
    else:
        print("\n".join(report(settings, daemons) + worker_report(settings, workers)))
    return EXIT_OK if daemons else EXIT_FAILED


def report(settings: Settings, daemons: list[dict[str, object]]) -> list[str]:
    shared = "shared by several daemons" if settings.is_shared_store else "one daemon at a time"
    lines = [f"state database: {settings.state_where} ({shared})"]
    if not daemons:
        return [*lines, "no daemon is running on it"]
    rows = [
        [
            str(daemon["host"]),
            str(daemon["pid"]),
            str(daemon["version"] or ""),
            when(daemon["started_at"]),
            when(daemon["last_heartbeat"]) or "-",
            "alive" if daemon["alive"] else "silent: its runs are being marked interrupted",
        ]
        for daemon in daemons
    ]
    return [*lines, *table(["HOST", "PID", "VERSION", "STARTED", "HEARTBEAT", "STATE"], rows)]


def worker_report(settings: Settings, workers: list[Any]) -> list[str]:
    """The Kafka workers the daemons last saw on the results topic."""
    executor = settings.executor
    if executor.type != "kafka":
        return ["runs run on each daemon's own worker pool (settings.executor: local)"]
    lines = [f"runs run on Kafka workers ({executor.runs_topic} -> {executor.results_topic})"]
    if not workers:
        return [*lines, "no worker's result seen yet"]
    rows = [
        [str(w.get("name")), when(w.get("last_seen")), str(w.get("results"))]
        for w in workers
        if isinstance(w, dict)
    ]
    return [*lines, *table(["WORKER", "LAST RESULT", "RESULTS"], rows)]
