"""Durable state: the Store protocol (base), its SQLite implementation, and opening one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poller.store.base import Claim, JobState, Store, StoreError
from poller.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from poller.config.models import Settings

__all__ = [
    "Claim",
    "JobState",
    "SqliteStore",
    "Store",
    "StoreError",
    "open_store",
]


def open_store(settings: Settings, *, read_only: bool = False) -> Store:
    """The store settings.state_db names (a path: SQLite). `read_only` reads an existing
    one as it is (the commands). Raises StateFileError."""
    return SqliteStore(settings.state_db, settings.durability, read_only=read_only)
