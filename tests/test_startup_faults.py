"""Start-up faults end in one clear paragraph and a non-zero exit, never a traceback, and never
touch a damaged file: a read-only data folder or log folder (a tmpfs mounted read-only, since
CI runs as root, where mode bits do not stop writes), a state file that is not a database."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemonproc import run_app, tick_job, tmpfs


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """An empty folder on a read-only tmpfs."""
    with tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        yield folder


def start(folder: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    (folder / "steps.py").write_text("def tick(data, context):\n    return {}\n")
    config = {"settings": settings, "jobs": [tick_job("t", every="1h")]}
    (folder / "config.json").write_text(json.dumps(config))
    return run_app(folder)


def one_paragraph(text: str) -> str:
    assert "Traceback" not in text, text
    assert text.strip() and "\n\n" not in text.strip(), text
    return text


@pytest.mark.parametrize(
    ("setting", "name", "what"),
    [
        ("state_db", "poller.db", "the state database {} cannot be opened"),
        ("log_file", "logfile.log", "the log file {} cannot be written"),
    ],
    ids=["data-folder", "log-folder"],
)
def test_a_read_only_folder_is_one_clear_paragraph(
    tmp_path: Path, read_only: Path, setting: str, name: str, what: str
) -> None:
    done = start(tmp_path, **{setting: str(read_only / name)})
    assert done.returncode == 1
    assert one_paragraph(done.stderr).startswith("app.py: " + what.format(read_only / name))
    assert "Read-only file system" in done.stderr and f"settings.{setting}" in done.stderr


def test_a_state_file_that_is_not_a_database_is_reported_and_left_alone(tmp_path: Path) -> None:
    name = "poller.db"
    data = tmp_path / "data"
    data.mkdir()
    damaged = data / name
    damaged.write_bytes(b"this is not an SQLite file\n" * 200)
    damaged.chmod(0o644)
    before = (hashlib.sha256(damaged.read_bytes()).hexdigest(), damaged.stat().st_mode)
    done = start(tmp_path)
    assert done.returncode == 1
    assert one_paragraph(done.stderr).startswith(
        f"app.py: the state database {damaged} cannot be opened: file is not a database"
    )
    assert "It is left as it is" in done.stderr
    assert (hashlib.sha256(damaged.read_bytes()).hexdigest(), damaged.stat().st_mode) == before
    assert sorted(p.name for p in data.iterdir() if p.name.startswith(name)) == [name]
