"""Poller's entry point: the command line (poller.commands) and the daemon's loop.

`python app.py` runs the daemon on ./config.json (or --config PATH, or $POLLER_CONFIG).
The loop below is the whole daemon read top to bottom: everything it calls only decides
or hands off, so it never blocks on a run.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from poller import timeformat, tuning
from poller.clock import Flag, SystemClock
from poller.commands.alerttest import cmd_alert_test
from poller.commands.check import cmd_check
from poller.commands.foreground import cmd_run
from poller.commands.history import cmd_history
from poller.commands.jobs import cmd_jobs
from poller.commands.kafkacmd import cmd_kafka
from poller.commands.options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigSource,
    guard_pipe,
    load,
    open_log,
)
from poller.commands.parser import build_parser
from poller.commands.status import cmd_status
from poller.commands.worker import cmd_worker
from poller.config.load import parse_config
from poller.config.models import Config
from poller.daemon import Daemon
from poller.errors import ConfigError, PollerError
from poller.redaction import Redactor
from poller.reload import ConfigReloader, ConfigWatcher
from poller.store import StoreError, open_store

log = logging.getLogger("poller")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    source = ConfigSource.of(args, os.environ)
    if args.command is None:
        return run_daemon(source)
    command = COMMANDS[args.command]
    return guard_pipe(lambda: command(source, args))


def run_daemon(source: ConfigSource) -> int:
    """The daemon: load, schedule, then loop until SIGTERM/SIGINT."""
    with tuning.no_collection():  # until the start-up's objects are frozen
        return _run_daemon(source)


def _run_daemon(source: ConfigSource) -> int:
    # SIGHUP is taken by a thread (hangups, below), never by a handler: a burst of them
    # nests handlers on the main thread until the recursion limit ends the daemon. Blocked
    # here, before any thread starts, so that every thread inherits the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    config_path = source.path
    loaded = load(source)
    if isinstance(loaded, (str, ConfigError)):
        print(loaded, file=sys.stderr)
        return EXIT_USAGE
    config = loaded
    settings = config.settings
    redactor = Redactor(config.secret_values())
    if not open_log(config, redactor, stderr=sys.stderr.isatty()):
        return EXIT_FAILED
    try:
        store = open_store(settings)
        store.acquire_daemon_lock()  # and migrates a file an older Poller wrote
    except PollerError as err:
        log.error("%s", err)
        print(f"app.py: {err}", file=sys.stderr)
        return EXIT_FAILED
    clock = SystemClock()
    daemon = Daemon(config, store, clock, redactor=redactor, report=report_to_stderr)
    watcher = ConfigWatcher(config_path)
    reloader = ConfigReloader(
        watcher, clock, config_path.read_bytes(), lambda text: parse_config(text, config_path)
    )
    stopping = Flag()  # set by signal handlers: no locks

    def on_stop(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set() and signum == signal.SIGINT:
            os._exit(130)  # a second Ctrl-C: out at once; the next start marks runs interrupted
        stopping.set()
        clock.stop()  # wakes the loop, and every retry backoff

    def hangups() -> None:
        while True:
            signal.sigwait({signal.SIGHUP})  # many pending ones count as one
            reloader.forced.set()
            watcher.signal()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    threading.Thread(target=hangups, name="sighup", daemon=True).start()
    api = None
    if settings.api.enabled:
        from poller.api.server import start_api  # fastapi and uvicorn load only to serve

        try:
            api = start_api(daemon, config_path)  # before any run, so a refusal runs nothing
        except PollerError as err:
            log.error("%s", err)
            print(f"app.py: {err}", file=sys.stderr)
            store.close()
            return EXIT_FAILED
        if api is not None and api.page_address:
            # Once, to the terminal and never to the log: the address carries the key.
            print(f"Poller: open {api.page_address} to see the jobs", file=sys.stderr)
    tuning.apply_for_daemon()
    try:
        daemon.start()
    except StoreError as err:
        log.error("%s", err)
        print(f"app.py: {err}", file=sys.stderr)
        store.close()
        return EXIT_FAILED
    watcher.start()
    reloader.start()
    tuning.freeze_long_lived()
    log.info(
        "Poller started: pid %d, %d job(s), config %s, history %s",
        os.getpid(),
        len(config.jobs),
        config_path,
        settings.state_where,
    )
    while not stopping.is_set():
        reloaded = reloader.take()
        if reloaded is not None:
            apply_reload(daemon, reloaded, config_path)
        wait = daemon.tick(clock.now())
        clock.wait(wait)
    watcher.stop()
    reloader.stop()
    grace = daemon.config.settings.shutdown_grace_seconds
    log.info(
        "stopping: no new fires; waiting up to %s for %d run(s)",
        timeformat.seconds_text(grace),
        daemon.inflight(),
    )
    left = daemon.stop(grace)  # /health says "stopping" meanwhile
    if api is not None:
        api.stop()
    if left:
        log.warning("stopped with %d run(s) unfinished; they are marked interrupted", left)
    log.info("Poller stopped")
    store.close()
    logging.shutdown()
    if left:
        os._exit(EXIT_OK)  # worker threads still in a call would otherwise hold the exit
    return EXIT_OK


def report_to_stderr(line: str) -> None:
    """What the operator must see even when the log cannot be written (a full disk)."""
    print(f"poller: {line}", file=sys.stderr, flush=True)


def apply_reload(daemon: Daemon, reloaded: Config | ConfigError, config_path: Path) -> None:
    """Apply a parsed save, or say why it is invalid; the last good config runs on."""
    if isinstance(reloaded, ConfigError):
        log.error("reload of %s failed; keeping the last good config. %s", config_path, reloaded)
        daemon.count_reload(applied=False, problems=[p.render() for p in reloaded.problems])
        return
    try:
        summary = daemon.apply(reloaded)
    except Exception as err:  # the reload boundary: a reload never ends the daemon
        log.exception("reload of %s failed; keeping the last good config", config_path)
        daemon.count_reload(applied=False, problems=[f"it could not be applied: {err}"])
        return
    daemon.count_reload(applied=True)
    tuning.freeze_long_lived()
    log.info("reloaded %s: %s", config_path, summary)


COMMANDS: dict[str, Callable[[ConfigSource, argparse.Namespace], int]] = {
    "check": cmd_check,
    "jobs": cmd_jobs,
    "run": cmd_run,
    "history": cmd_history,
    "status": cmd_status,
    "alert-test": cmd_alert_test,
    "worker": cmd_worker,
    "kafka": cmd_kafka,
}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before a command or the daemon took SIGINT over
        sys.exit(128 + signal.SIGINT)
