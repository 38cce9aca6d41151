"""Poller's entry point: the command line (check | run | history) and the daemon.

`python app.py` runs the daemon on ./config.json (or --config PATH, or $POLLER_CONFIG).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from poller.configfile import config_warnings, load_config
from poller.errors import ConfigError
from poller.forecast import forecast
from poller.timing import local_zone

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = Path(args.config or os.environ.get("POLLER_CONFIG") or "config.json")
    command = args.command or "daemon"
    if command == "check":
        return cmd_check(config_path, args)
    print(f"app.py: {command} is not available yet", file=sys.stderr)
    return EXIT_USAGE


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
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 instant; expected e.g. 2026-03-29T00:30:00+00:00"
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
            print(f"  next: {fire.isoformat()}{note}")
    for warning in warnings:
        print(f"\nwarning: {warning}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
