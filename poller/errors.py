"""The one exception hierarchy of Poller and the Problem record of a config error.

Each exception builds its message from its fields, so callers never format error text.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from poller.redaction import MASK, Redactor, is_secret_name
from poller.timeformat import json_default


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file, located as precisely as we can."""

    file: str
    path: str
    expected: str
    line: int | None = None
    column: int | None = None
    value: object = None
    has_value: bool = False

    def render(self) -> str:
        """`config.json:14:9: jobs[2].time: "25:00" is not valid; expected "HH:MM"`."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        subject = f"{self.path}: " if self.path else ""
        if self.has_value:
            subject += f"{_shown(self.path, self.value)} is not valid; "
        return f"{where}: {subject}{self.expected}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "expected": self.expected,
            "message": self.render(),
        }


def _shown(path: str, value: object, limit: int = 60) -> str:
    """The bad value as an error shows it: short, and masked where it may be a secret (a
    password's place, a header, a URL's credentials), before it is cut."""
    parts = [part for part in re.split(r"[.\[\]]+", path) if part]
    last = parts[-1] if parts else ""
    if (
        is_secret_name(last)
        or "headers" in parts
        or (last == "value" and "auth" in parts)
        or last == "ping_url"
        or (last == "url" and "alerts" in parts)  # a webhook's URL holds its token
    ):
        return MASK
    text = json.dumps(Redactor().value(value), default=json_default, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PollerError(Exception):
    """Base of every error Poller raises on purpose."""


class StateFileError(PollerError):
    """A state file that cannot be opened (or migrated); it is left as it is."""

    def __init__(self, path: Path, cause: BaseException, advice: str | None = None) -> None:
        self.path = path
        reason = getattr(cause, "strerror", None) or str(cause)
        if advice is None and (
            isinstance(cause, sqlite3.DatabaseError)
            and "database" in reason
            and ("not a database" in reason or "malformed" in reason)
        ):
            advice = (
                "It is left as it is: move it aside (with its -wal and -shm files, if any) to "
                "start with an empty history, or restore it from a backup."
            )
        elif advice is None:
            advice = (
                "Make its folder writable (and check the disk has room), "
                "or point settings.state_db elsewhere."
            )
        self.detail = f"cannot be opened: {reason}. {advice}"
        super().__init__(f"the state database {path} {self.detail}")


class StoreUnavailableError(PollerError):
    """The PostgreSQL database cannot be opened (reached, logged into, or read)."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.detail = reason
        super().__init__(f"the state database {where} cannot be opened: {reason}")


class ConfigError(PollerError):
    """A config file that cannot be used; lists every problem found at once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        head = "1 problem" if count == 1 else f"{count} problems"
        lines = [f"invalid config ({head}):"] + [f"  {p.render()}" for p in self.problems]
        super().__init__("\n".join(lines))


class CallError(PollerError):
    """A call to the integration platform (or a plain HTTP call) that failed for good."""

    def __init__(
        self,
        environment: str,
        integration_id: str,
        status: int | None,
        attempts: int,
        body_excerpt: str = "",
        reason: str = "",
        host: str = "",
    ) -> None:
        self.environment = environment
        self.integration_id = integration_id
        self.host = host
        self.status = status
        self.attempts = attempts
        self.body_excerpt = body_excerpt
        self.reason = reason
        what = f"HTTP {status}" if status is not None else (reason or "no response")
        where = f" at {host}" if host and host not in integration_id else ""
        message = (
            f"{environment}: {integration_id}{where} failed after {attempts} "
            f"attempt{'s' if attempts != 1 else ''}: {what}"
        )
        if status is not None and reason:
            message += f" ({reason})"
        if body_excerpt:
            message += f": {body_excerpt}"
        super().__init__(message)


class RunStoppedError(PollerError):
    """The daemon stopped while a call waited to retry; its run ends `interrupted`."""

    def __init__(self, environment: str, target: str, attempts: int) -> None:
        self.environment = environment
        self.target = target
        self.attempts = attempts
        super().__init__(
            f"stopped during retry backoff: {environment}: {target} after {attempts} "
            f"attempt{'s' if attempts != 1 else ''}"
        )


class RunCancelledError(PollerError):
    """The run was stopped between two entries (Ctrl-C in `app.py run`); it ends `interrupted`."""

    def __init__(self, where: str) -> None:
        super().__init__(f"stopped before {where}")


class ChainError(PollerError):
    """A chain that cannot run at all (an unknown environment, an unimportable function)."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"job {job_id}: {reason}")
