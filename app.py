"""Poller's entry point: the command line (check | run | history) and the daemon's loop.

`python app.py` runs the daemon on ./config.json (or --config PATH, or $POLLER_CONFIG).
The loop below is the whole daemon read top to bottom: everything it calls only decides
or hands off, so it never blocks on a run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from zoneinfo import ZoneInfo

from lookup import ClientPool
from poller import timeformat, tuning
from poller.clock import Flag, SystemClock
from poller.config.load import config_warnings, load_config, parse_config
from poller.config.models import Config
from poller.daemon import Daemon
from poller.errors import ConfigError, PollerError
from poller.forecast import forecast
from poller.logs import setup_logging
from poller.redaction import Redactor
from poller.reload import ConfigReloader, ConfigWatcher
from poller.run import chain
from poller.store import StoreError, open_store
from poller.timing import local_zone

log = logging.getLogger("poller")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = Path(args.config or os.environ.get("POLLER_CONFIG") or "config.json")
    command = args.command or "daemon"
    if command == "check":
        return cmd_check(config_path, args)
    if command == "run":
        return cmd_run(config_path, args)
    if command == "history":
        return cmd_history(config_path, args)
    return run_daemon(config_path)


def run_daemon(config_path: Path) -> int:
    """The daemon: load, schedule, then loop until SIGTERM/SIGINT."""
    with tuning.no_collection():  # until the start-up's objects are frozen
        return _run_daemon(config_path)


def _run_daemon(config_path: Path) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
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

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        reloader.forced.set()
        watcher.signal()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hangup)
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
        settings.state_db,
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


def open_log(config: Config, redactor: Redactor, stderr: bool) -> bool:
    """Set up logging; False, after saying why on stderr, when the log file cannot be written."""
    settings = config.settings
    try:
        setup_logging(
            settings.log_file,
            settings.log_format,
            settings.log_level,
            settings.log_keep_days,
            stderr=stderr,
            redactor=redactor,
        )
    except OSError as err:
        print(
            f"app.py: the log file {settings.log_file} cannot be written "
            f"({err.strerror or err}). Make its folder writable (and check the disk has "
            "room), or point settings.log_file elsewhere.",
            file=sys.stderr,
        )
        return False
    return True


def apply_reload(daemon: Daemon, reloaded: Config | ConfigError, config_path: Path) -> None:
    """Apply a parsed save, or say why it is invalid; the last good config runs on."""
    if isinstance(reloaded, ConfigError):
        log.error("reload of %s failed; keeping the last good config. %s", config_path, reloaded)
        daemon.count_reload(applied=False)
        return
    try:
        summary = daemon.apply(reloaded)
    except Exception:  # the reload boundary: a reload never ends the daemon
        log.exception("reload of %s failed; keeping the last good config", config_path)
        daemon.count_reload(applied=False)
        return
    daemon.count_reload(applied=True)
    tuning.freeze_long_lived()
    log.info("reloaded %s: %s", config_path, summary)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="config file (default: $POLLER_CONFIG, else ./config.json)",
    )
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="Poller: run integration chains on schedules. "
        "Without a command, runs the daemon.",
        parents=[common],
    )
    parser.set_defaults(config=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check",
        parents=[common],
        help="validate the config and show each job's next fire times",
        description="Validate the config; print every job with its next fire times. "
        "Exit 0 if valid, 1 if not.",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--count", type=positive_int, default=3, metavar="N", help="fire times per job (3)"
    )
    check.add_argument(
        "--after",
        type=parse_instant,
        metavar="ISO",
        help="compute fire times after this instant (default: now); "
        "without an offset it is read in settings.timezone",
    )
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run one job's chain now and print its result as JSON",
        description="Run one job's chain now in the foreground; print the run result as "
        "JSON on stdout (logs go to the log file and stderr). Exit 0 on success or skip, "
        "1 on failure, 2 on a usage or config error.",
    )
    run.add_argument("job_id", metavar="JOB_ID", help="the job's id (see: app.py check)")
    run.add_argument("--force", action="store_true", help="run even on a blackout day/date")
    history = commands.add_parser(
        "history",
        parents=[common],
        help="show recent runs, newest first",
        description="Show recent runs from the state database, newest first.",
    )
    history.add_argument("job_id", nargs="?", metavar="JOB_ID", help="only this job's runs")
    history.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="how many runs (20)"
    )
    history.add_argument("--json", action="store_true", help="print SPEC §4 run records")
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1 or value > 1000:
        raise argparse.ArgumentTypeError(f"{text} is out of range; expected 1 to 1000")
    return value


def parse_instant(text: str) -> datetime:
    try:
        return timeformat.parse_wall(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{err}; expected e.g. 2026-03-29T00:30:00+00:00"
        ) from None


def cmd_check(config_path: Path, args: argparse.Namespace) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as err:
        if args.json:
            report = {"valid": False, "errors": [p.as_dict() for p in err.problems], "jobs": []}
            print(json.dumps(report, indent=2))
        else:
            print(err)
        return EXIT_FAILED
    after = args.after or datetime.now(UTC)
    if after.tzinfo is None:
        zone = config.settings.timezone
        after = after.replace(tzinfo=local_zone() if zone is None else ZoneInfo(zone))
    jobs = forecast(config, after, args.count)
    warnings = config_warnings(config)
    if args.json:
        report = {
            "valid": True,
            "errors": [],
            "warnings": warnings,
            "jobs": [job.as_dict() for job in jobs],
        }
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"{config_path}: valid, {len(jobs)} job{'s' if len(jobs) != 1 else ''}")
    for item in jobs:
        state = "enabled" if item.job.enabled else "disabled"
        print(f"\n{item.job.id}  ({item.job.label})  [{state}]")
        print(f"  schedule: {item.schedule}  [{item.timezone}]")
        for fire, blackout in zip(item.next_fires, item.blackouts, strict=True):
            note = f"  (skipped: {blackout})" if blackout else ""
            print(f"  next: {timeformat.text(fire)}{note}")
    for warning in warnings:
        print(f"\nwarning: {warning}")
    return EXIT_OK


def cmd_run(config_path: Path, args: argparse.Namespace) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    job = config.job_map.get(args.job_id)
    if job is None:
        known = ", ".join(sorted(config.job_map)) or "none"
        print(
            f"app.py run: no job {args.job_id!r} in {config_path}; jobs: {known}", file=sys.stderr
        )
        return EXIT_USAGE
    redactor = Redactor(config.secret_values())
    if not open_log(config, redactor, stderr=True):
        return EXIT_FAILED
    clients = ClientPool(config.environments, redactor=redactor)
    try:
        result = chain.run_job(job, config, clients, trigger="manual", force=args.force)
    finally:
        clients.close()
    record = result.to_dict()
    save_manual_run(config, record)
    print(json.dumps(record, indent=2))
    return EXIT_FAILED if result.status == "failed" else EXIT_OK


def save_manual_run(config: Config, record: dict[str, object]) -> None:
    """Keep a manual run in the history too, so `history` and the API show it."""
    try:
        store = open_store(config.settings)
    except Exception as err:  # the run happened; a history problem must not hide its result
        log.warning("the run could not be saved in %s: %s", config.settings.state_db, err)
        return
    try:
        store.save(record)
    finally:
        store.close()


def cmd_history(config_path: Path, args: argparse.Namespace) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    db_path = Path(config.settings.state_db)
    runs: list[dict[str, object]] = []
    if db_path.exists():
        store = open_store(config.settings)
        try:
            runs = store.recent(args.job_id, args.limit)
        finally:
            store.close()
    redactor = Redactor(config.secret_values())  # records kept by an older Poller too
    runs = [redactor.value(run) for run in runs]
    if args.json:
        print(json.dumps(runs, indent=2))
        return EXIT_OK
    if not runs:
        print(f"no runs yet in {db_path}")
        return EXIT_OK
    print(f"{'started':<25} {'job':<20} {'trigger':<9} {'status':<11} {'duration':>9}  reason")
    for run in runs:
        print(_history_line(run))
    return EXIT_OK


def _history_line(run: dict[str, object]) -> str:
    started_at = timeformat.parse_or_none(run.get("started_at"))
    finished_at = timeformat.parse_or_none(run.get("finished_at"))
    started = "" if started_at is None else timeformat.local_text(started_at)
    duration = ""
    if started_at is not None and finished_at is not None:
        duration = timeformat.seconds_text((finished_at - started_at).total_seconds())
    reason = str(run.get("reason") or "")
    job_id, trigger, status = (str(run.get(k) or "") for k in ("job_id", "trigger", "status"))
    return f"{started:<25} {job_id:<20} {trigger:<9} {status:<11} {duration:>9}  {reason[:80]}"


if __name__ == "__main__":
    sys.exit(main())
