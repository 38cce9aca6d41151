"""`local` and `dummy` sources: a folder on the worker's own machine (os.scandir). `dummy`
is the shipped sample files (dummy_data/, or $DUMMY_DATA_PATH), for trying a worker out."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from poller.config.sources import DummySource, LocalSource
from poller.sources.base import MAX_DEPTH, FileInfo, SourceError

DUMMY_DATA = Path(__file__).resolve().parent.parent.parent / "dummy_data"


class FolderSource:
    def __init__(self, folder: Path, kind: str = "local") -> None:
        self.folder = folder
        self.identity = f"{kind}://{folder}"

    def files(self, recursive: bool) -> Iterator[FileInfo]:
        if not self.folder.is_dir():
            why = "no such folder" if not self.folder.exists() else "not a folder"
            raise SourceError(self.identity, why, is_retryable=False)
        yield from self._walk(self.folder, "", recursive, 0)

    def _walk(self, folder: Path, prefix: str, recursive: bool, depth: int) -> Iterator[FileInfo]:
        try:
            with os.scandir(folder) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)
        except OSError as err:
            raise SourceError(self.identity, f"{prefix or '.'}: {err.strerror}") from None
        for entry in listed:
            path = prefix + entry.name
            try:
                if entry.is_file():
                    stat = entry.stat()
                    modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                    yield FileInfo(path, stat.st_size, modified)
                elif recursive and depth < MAX_DEPTH and entry.is_dir(follow_symlinks=False):
                    yield from self._walk(Path(entry.path), path + "/", recursive, depth + 1)
            except FileNotFoundError:
                continue  # gone between the listing and its stat: not there any more

    def close(self) -> None:
        pass


def open_local(config: LocalSource) -> FolderSource:
    return FolderSource(Path(config.path).expanduser().resolve())


def open_dummy(config: DummySource, environ: Mapping[str, str]) -> FolderSource:
    folder = config.path or environ.get("DUMMY_DATA_PATH") or str(DUMMY_DATA)
    return FolderSource(Path(folder).expanduser().resolve(), kind="dummy")
