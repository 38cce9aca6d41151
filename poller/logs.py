"""Logging set-up: the daily-rotated log file, text or JSON lines, secret redaction, rate limiting.

Every line carries `job_id` and `run_id` (a dash when not about a run). Secrets are
replaced before any handler sees the record.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path
from typing import Any

from poller import filemodes, tuning
from poller.redaction import Redactor
from poller.timeformat import json_default, log_text

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [job=%(job_id)s run=%(run_id)s] %(message)s"


_RUN: ContextVar[tuple[str, str]] = ContextVar("poller_run", default=("-", "-"))
_ITEM: ContextVar[str | None] = ContextVar("poller_item", default=None)
_ORIGIN: ContextVar[tuple[str, int, int] | None] = ContextVar("poller_origin", default=None)


@contextmanager
def run_context(job_id: str, run_id: str) -> Iterator[None]:
    """Lines logged inside (by any module, on this thread) carry this job and run id."""
    token = _RUN.set((job_id, run_id))
    try:
        yield
    finally:
        _RUN.reset(token)


@contextmanager
def item_context(item: str) -> Iterator[None]:
    """Lines logged inside (on this thread) are about one for_each item: they begin
    "[item KEY]" and JSON lines carry "item"."""
    token = _ITEM.set(item)
    try:
        yield
    finally:
        _ITEM.reset(token)


@contextmanager
def origin_context(topic: str, partition: int, offset: int) -> Iterator[None]:
    """Lines logged inside (on this thread) are about one Kafka message: they begin
    "[topic/partition@offset]" and JSON lines carry topic, partition and offset."""
    token = _ORIGIN.set((topic, partition, offset))
    try:
        yield
    finally:
        _ORIGIN.reset(token)


def _mark(record: logging.LogRecord, item: str | None) -> None:
    """Put the item and the Kafka origin a line is logged in on its record and message."""
    origin = _ORIGIN.get()
    if item is not None:
        record.item = item
        record.msg = f"[item {item}] {record.msg}"
    if origin is not None:
        record.topic, record.partition, record.offset = origin
        record.msg = f"[{origin[0]}/{origin[1]}@{origin[2]}] {record.msg}"


class _RunAdapter(logging.LoggerAdapter[logging.Logger]):
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        job_id, run_id = _RUN.get()
        item = _ITEM.get()
        extra = {"job_id": job_id, "run_id": run_id, **kwargs.get("extra", {})}
        if item is not None:
            extra["item"] = item
            msg = f"[item {item}] {msg}"
        kwargs["extra"] = extra
        return msg, kwargs


def run_logger(name: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records carry the ids of the run_context they are logged in, whatever
    handler takes them (Lambda's, pytest's); ContextFilter does it for other loggers' lines
    in the handlers setup_logging installs."""
    return _RunAdapter(logging.getLogger(name), {})


class ContextFilter(logging.Filter):
    """Gives every record job_id/run_id (the run it is logged in, or a dash)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "job_id" not in record.__dict__:
            record.job_id, record.run_id = _RUN.get()
            _mark(record, _ITEM.get())
        return True


class RedactFilter(logging.Filter):
    """Masks secrets in the rendered message and exception text (poller.redaction)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        record.msg, record.args = self.redactor.text(record.getMessage()), None
        return True


class LogFile(TimedRotatingFileHandler):
    """The daily-rotated log file, created (and kept) readable by owner and group only."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, filemodes.LOG)
        os.fchmod(fd, filemodes.LOG)  # a file made by an older Poller, or under another umask
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


class RateLimitFilter(logging.Filter):
    """Lets a message template through at most `burst` times per `window_seconds`.

    A fault in a tight loop can then never flood the disk; the count of dropped lines is
    reported with the next line of that template that gets through. Lines of different
    runs never limit each other: a busy, healthy daemon keeps every run's lines.
    """

    def __init__(self, burst: int = 10, window_seconds: float = 60.0, max_keys: int = 20_000):
        super().__init__()
        self.burst = burst
        self.window_seconds = window_seconds
        self.max_keys = max_keys
        self._seen: OrderedDict[tuple[str, str, str], tuple[float, int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg), getattr(record, "run_id", "-"))
        now = time.monotonic()
        with self._lock:
            start, count, dropped = self._seen.get(key, (now, 0, 0))
            if now - start >= self.window_seconds:
                start, count = now, 0
            count += 1
            if count > self.burst:
                self._seen[key] = (start, count, dropped + 1)
                return False
            self._seen[key] = (start, count, 0)
            if len(self._seen) > self.max_keys:
                # Each run adds keys. Forgetting the oldest one at a time keeps the map
                # bounded without a pause: a sweep of 20,000 keys held the GIL for ~6 ms.
                self._seen.popitem(last=False)
        if dropped:
            record.msg = f"{record.msg} (and {dropped} similar lines suppressed)"
        return True


class TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, its time written as every log time is (poller.timeformat.log_text)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return log_text(record.created)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": log_text(record.created),
            "level": record.levelname,
            "logger": record.name,
            "job_id": getattr(record, "job_id", "-"),
            "run_id": getattr(record, "run_id", "-"),
            "message": record.getMessage(),
        }
        for name in ("item", "topic", "partition", "offset"):
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info or record.exc_text:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry, ensure_ascii=False, default=json_default)


def setup_logging(
    log_file: str | Path | None,
    log_format: str = "text",
    level: str = "INFO",
    keep_days: int = 14,
    stderr: bool = True,
    redactor: Redactor | None = None,
) -> None:
    """Configure the root logger; every line goes through `redactor` (reloads configure it)."""
    tuning.lean_log_records()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    redact = RedactFilter(redactor or Redactor())
    handlers: list[logging.Handler] = []
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(LogFile(path, when="midnight", backupCount=keep_days, encoding="utf-8"))
    if stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter)
        # Rate limiting keys on a line's template, so it comes before redaction renders it.
        for log_filter in (ContextFilter(), RateLimitFilter(), redact):
            handler.addFilter(log_filter)
        root.addHandler(handler)
