"""One polling job's work, Kafka aside (SPEC §10): list the source, keep the files that
match and are new or changed since the last listing of the same source and pattern, and
make their events. The listing state is saved only once the events are out (`remember`),
so a crash before then publishes them again, with the same ids: at least once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from poller.config.kafka import PollingJob
from poller.sources import FileInfo, Source, is_recursive, matching
from poller.store import Store
from poller.timeformat import utc_text


@dataclass(frozen=True, slots=True)
class Event:
    """One file event: its Kafka key and its JSON value."""

    key: str
    value: dict[str, Any]

    def encoded(self) -> tuple[bytes, bytes]:
        text = json.dumps(self.value, ensure_ascii=False, separators=(",", ":"))
        return self.key.encode(), text.encode()


@dataclass(frozen=True, slots=True)
class Listing:
    """What a job found: every matching file (its state to remember), and the events due."""

    scope: str
    versions: dict[str, str]
    events: tuple[Event, ...]
    matched: int


def event_id(identity: str, file: FileInfo) -> str:
    """The same source, path and version give the same id, whichever worker lists it."""
    text = "\n".join((identity, file.path, file.version))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_event(job: PollingJob, identity: str, file: FileInfo, now: datetime) -> Event:
    value = {
        "event_id": event_id(identity, file),
        "job_id": job.job_id,
        "source_type": job.source_config.source_type,
        "source": identity,
        "path": file.path,
        "name": file.name,
        "size": file.size,
        "modified_at": None if file.modified_at is None else utc_text(file.modified_at),
        "etag": file.etag,
        "discovered_at": utc_text(now),
        "metadata": job.metadata,
    }
    return Event(f"{identity}|{file.path}", value)


def scope_of(source: Source, pattern: str) -> str:
    """What listing state is kept under: a source and a pattern."""
    return f"{source.identity}|{pattern}"


def list_files(job: PollingJob, source: Source, store: Store | None, now: datetime) -> Listing:
    """The job's matching files and the events of those new or changed since the listing
    `store` keeps (every one with emit "all", or without a store); raises SourceError."""
    scope = scope_of(source, job.file_pattern)
    files = list(matching(source.files(is_recursive(job.file_pattern)), job.file_pattern))
    seen = {} if job.emit == "all" or store is None else store.listing(scope)
    events = tuple(
        file_event(job, source.identity, file, now)
        for file in files
        if seen.get(file.path) != file.version
    )
    return Listing(scope, {file.path: file.version for file in files}, events, len(files))


def remember(listing: Listing, store: Store, now: datetime) -> None:
    """Keep what was listed, once its events are acknowledged; raises StoreError."""
    store.save_listing(listing.scope, listing.versions, now)
