"""What every file source is (SPEC §10): the files it lists, how a pattern picks them, and
the error a source that cannot be reached raises. Each source type is a module of its own
behind the `Source` protocol; none of them knows about Kafka or the store.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from poller.errors import PollerError

MAX_DEPTH = 32
"""How deep a recursive listing goes below the source's folder."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One file as a source lists it. `path` is relative to the source's folder, with `/`."""

    path: str
    size: int | None
    modified_at: datetime | None
    """Aware, UTC; None when the source does not say."""
    etag: str | None = None

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    @property
    def version(self) -> str:
        """What changes when the file does: a new or changed file has another version."""
        modified = self.modified_at.isoformat() if self.modified_at else ""
        return f"{self.size}|{modified}|{self.etag or ''}"


class SourceError(PollerError):
    """A source that could not be listed: `reason` says why, without credentials."""

    def __init__(self, source: str, reason: str, *, is_retryable: bool = True) -> None:
        self.source = source
        self.reason = reason
        self.is_retryable = is_retryable
        super().__init__(f"{source}: {reason}")


class Source(Protocol):
    """An open connection to one place files are listed from; not shared between threads.

    `identity` names the place without credentials ("sftp://poller@files.example.com:22/in");
    it keys listing state and events. `files` lists every file below the folder (only its
    own entries unless `recursive`), raising SourceError. `close` is safe to call twice.
    """

    identity: str

    def files(self, recursive: bool) -> Iterator[FileInfo]: ...

    def close(self) -> None: ...


def is_recursive(pattern: str) -> bool:
    """Whether a pattern reaches below the source's folder ("**/*.csv", "in/*.csv")."""
    return "/" in pattern


@functools.lru_cache(maxsize=256)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A glob over relative paths: `*` and `?` stay within a folder name, `**/` is any
    number of folders (none included), `[...]` a set of characters."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            out.append("[" + ("^" if negate else "") + re.escape(body[negate:]) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matching(files: Iterator[FileInfo], pattern: str) -> Iterator[FileInfo]:
    regex = pattern_regex(pattern)
    return (file for file in files if regex.match(file.path))
