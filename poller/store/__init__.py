"""Durable state: the Store protocol (base), its SQLite implementation, and opening one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poller.store.base import Claim, ClaimAnswer, JobState, Store, StoreError
from poller.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from poller.config.models import Settings

__all__ = [
    "Claim",
    "ClaimAnswer",
    "JobState",
    "SqliteStore",
    "Store",
    "StoreError",
    "open_store",
]


def open_store(settings: Settings, *, read_only: bool = False) -> Store:
    """The store settings.state_db names: a path is SQLite, a postgresql:// URL PostgreSQL.
    `read_only` reads an existing one as it is (the commands). Raises StateFileError or
    StoreUnavailableError."""
    if settings.is_shared_store:
        from poller.store.postgres import PostgresStore  # psycopg loads only when used

        return PostgresStore(
            settings.state_db, read_only=read_only, lease_seconds=settings.daemon_lease_seconds
        )
    return SqliteStore(settings.state_db, settings.durability, read_only=read_only)
