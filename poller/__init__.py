"""Poller: a scheduler daemon for integration chains (internal package)."""

from __future__ import annotations

__version__ = "0.1.0"
