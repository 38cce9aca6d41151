"""Who may read what Poller writes: the state database and its side files are the owner's
alone (0600: run outputs, the generated API key), log files the owner's and group's (0640).

Only modes: where files live is the config's business.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE = 0o600
LOG = 0o640
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
"""SQLite makes these beside a database with the database file's own mode."""


def make_private(path: Path) -> None:
    """Create `path` empty with mode 0600 if it is missing (an existing file is left as is:
    it may be damaged, and is checked before `tighten` changes anything about it)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))


def tighten(path: Path) -> None:
    """Set `path`, and SQLite's side files of it that exist, to mode 0600 (files made by an
    older Poller or by hand may be readable by others).

    Never by opening the file: closing any descriptor of a database file drops the POSIX
    locks every SQLite connection of this process holds on it.
    """
    path.chmod(PRIVATE)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.chmod(PRIVATE)
