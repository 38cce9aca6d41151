"""`app.py status`: the daemons sharing the state database (SPEC §11).

It reads only the database, beside running daemons, so it needs none of their secrets but
a PostgreSQL URL's own ${NAME}.
"""

from __future__ import annotations

import argparse
import json

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
    except StoreError as err:
        return store_error(err)
    if store is not None:
        store.close()
    kind = "postgresql" if settings.is_shared_store else "sqlite"
    if args.json:
        body = {"store": kind, "state_db": settings.state_where, "daemons": daemons}
        print(json.dumps(body, indent=2))
    else:
        print("\n".join(report(settings, daemons)))
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
