"""What every command shares: exit codes, the command line, where the config came from,
loading it with an error a person can act on, and output to a pipe that may close early.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from poller import timeformat
from poller.config.load import load_config
from poller.config.models import Config, Settings
from poller.errors import ConfigError, StateFileError, StoreUnavailableError
from poller.logs import setup_logging
from poller.redaction import Redactor
from poller.store import Store, StoreError, open_store

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
UNSET_RE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
"""A ${NAME} left in a value that `load(unset_ok=True)` read without its variable."""
EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a process that SIGPIPE ended
REASON_CHARS = 72
"""A reason in a table line is shortened at a word to this many characters ("…")."""


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """The config file a command reads, and what named it."""

    path: Path
    given_by: str  # "--config", "$POLLER_CONFIG", or "" for the default ./config.json

    @classmethod
    def of(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> ConfigSource:
        if args.config is not None:  # even "": a --config that names nothing is said so
            return cls(Path(args.config), "--config")
        if environ.get("POLLER_CONFIG"):
            return cls(Path(environ["POLLER_CONFIG"]), "$POLLER_CONFIG")
        return cls(Path("config.json"), "")

    def missing(self) -> str | None:
        """Why the file cannot be found, with how to name another; None when it is there."""
        if self.path.is_dir():
            folder = self.path.absolute()
            return (
                f"app.py: {folder} ({self.given_by or 'the default'}) is a folder; name the "
                f"config file in it, e.g. {folder / 'config.json'}, with --config PATH or "
                "POLLER_CONFIG=PATH."
            )
        if self.path.exists():
            return None
        named = (
            f"named by {self.given_by}"
            if self.given_by
            else f"the default: config.json in the current folder {Path.cwd()}"
        )
        return (
            f"app.py: no config file at {self.path.absolute()} ({named}). Name yours with "
            "--config PATH (before or after the command), or set POLLER_CONFIG=PATH."
        )


def load(source: ConfigSource, *, unset_ok: bool = False) -> Config | ConfigError | str:
    """The config, its errors, or (a missing file) the one-paragraph reason to print."""
    missing = source.missing()
    if missing:
        return missing
    try:
        return load_config(source.path, unset_ok=unset_ok)
    except ConfigError as err:
        return err


def open_history(settings: Settings) -> Store | None:
    """The state database to read beside a running daemon, opened read-only, or None when
    it does not exist yet (a command must not create it; an empty file is a daemon's that
    is creating it). Raises StoreError."""
    path = Path(settings.state_db)
    unset = UNSET_RE.search(settings.state_db) if settings.is_shared_store else None
    if unset:
        raise StoreError(
            settings.state_where,
            f"settings.state_db uses {unset.group(0)}, which is not set in this shell; "
            "set it to read the shared database",
        )
    if not settings.is_shared_store and (
        not path.exists() or (path.is_file() and path.stat().st_size == 0)
    ):
        return None
    try:
        return open_store(settings, read_only=True)
    except StateFileError as err:
        raise StoreError(str(err.path), err.detail) from None
    except StoreUnavailableError as err:
        raise StoreError(err.where, err.detail) from None


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
        say(
            f"app.py: the log file {settings.log_file} cannot be written "
            f"({err.strerror or err}). Make its folder writable (and check the disk has "
            "room), or point settings.log_file elsewhere."
        )
        return False
    return True


def guard_pipe(command: Callable[[], int]) -> int:
    """Run a command whose output may go to a pager or `head` that quits early: a closed
    pipe ends it quietly (Python's documented recipe) instead of with a traceback."""
    try:
        code = command()
        sys.stdout.flush()
    except BrokenPipeError:
        # Later writes, and the interpreter's own flush at exit, go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


def close_ids(job_id: str, job_ids: Iterable[str], what: str = "jobs") -> str:
    """ "did you mean …?" with the ids most like `job_id` (ignoring case), else a few ids
    (of `what`: jobs, channels)."""
    by_folded = {known.casefold(): known for known in sorted(job_ids)}
    folded = difflib.get_close_matches(job_id.casefold(), list(by_folded), n=5, cutoff=0.5)
    if folded:
        return "did you mean " + ", ".join(by_folded[match] for match in folded) + "?"
    if not by_folded:
        return f"it has no {what}"
    names = list(by_folded.values())
    return f"its {what}: " + ", ".join(names[:10]) + (" …" if len(names) > 10 else "")


def shorten(text: str, width: int = REASON_CHARS) -> str:
    """One line of at most `width` characters ending in "…" when cut: at a word, unless
    that would keep less than half (one long word, a URL), then within it."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    cut = flat[: width - 1]
    at_word = cut[: cut.rfind(" ")] if " " in cut else ""
    return f"{at_word} …" if len(at_word) >= width // 2 else f"{cut}…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns as wide as their widest cell; the last one is left ragged."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers) - 1)]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def when(value: object) -> str:
    """A stored instant as a table shows it: the machine's zone, to the second."""
    instant = timeformat.parse_or_none(value)
    return "" if instant is None else timeformat.local_text(instant)


def duration(started: object, finished: object) -> str:
    start, end = timeformat.parse_or_none(started), timeformat.parse_or_none(finished)
    if start is None or end is None:
        return ""
    return timeformat.seconds_text(timeformat.ms_between(start, end) / 1000)


def say(message: str) -> None:
    print(message, file=sys.stderr)


def store_error(err: StoreError) -> int:
    say(f"app.py: {err}")
    return EXIT_FAILED


def instant_argument(text: str) -> datetime:
    try:
        return timeformat.parse_wall(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{err}; expected e.g. 2026-03-29T00:30:00+00:00"
        ) from None


def count_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1 or value > 1000:
        raise argparse.ArgumentTypeError(f"{text} is out of range; expected 1 to 1000")
    return value
