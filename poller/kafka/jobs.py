"""A polling job as it comes off Kafka: bytes → PollingJob, or the reason it is a dead letter;
and the dead letter itself (the reason, where the message came from, what it said, masked)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from poller.config.kafka import PollingJob
from poller.config.load import parse_document
from poller.errors import ConfigError, PollerError
from poller.jsondepth import too_deep_at
from poller.redaction import Redactor
from poller.timeformat import utc_text

MAX_MESSAGE_BYTES = 1024 * 1024
"""A polling job larger than this is a dead letter (one job is a few hundred bytes)."""
NAME = "message"
"""How a job's problems name it: "message:1:31: source_config.source_type: …"."""


class InvalidJobError(PollerError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def parse_job(value: bytes | None, environ: Mapping[str, str]) -> PollingJob:
    """The job a message holds, the `${NAME}`s of its source_config filled from the
    worker's environment.

    Raises InvalidJobError with every problem in one line.
    """
    if value is None or not value.strip():
        raise InvalidJobError("the message is empty; expected a JSON polling job")
    if len(value) > MAX_MESSAGE_BYTES:
        raise InvalidJobError(
            f"the message is {len(value):,} bytes; expected at most {MAX_MESSAGE_BYTES:,}"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJobError(
            "the message is not UTF-8 text; expected a JSON polling job"
        ) from None
    try:
        # Only the source's config: anything else of the job (its metadata) goes into
        # events as it came, and a secret filled in there would go with it.
        return parse_document(text, NAME, PollingJob, environ, fill_only="source_config")
    except ConfigError as err:
        raise InvalidJobError("; ".join(p.render() for p in err.problems)) from None


def dead_letter(
    reason: str,
    origin: Mapping[str, Any],
    value: bytes | None,
    redactor: Redactor,
    worker: str,
    now: datetime,
) -> dict[str, Any]:
    """What goes to the dead-letter topic: why, from where, and the message as it was
    (JSON as JSON, else text), masked by the worker's secrets and by key name."""
    text = (value or b"").decode("utf-8", "replace")
    message: Any = text[:4096]
    if len(text) <= MAX_MESSAGE_BYTES and too_deep_at(text) is None:
        with contextlib.suppress(ValueError):  # not JSON: its text
            message = json.loads(text)
    return {
        "reason": redactor.text(reason),
        "origin": dict(origin),
        "message": redactor.value(message),
        "failed_at": utc_text(now),
        "worker": worker,
    }
