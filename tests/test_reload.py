"""Every way an editor saves config.json gives exactly one reload, against the real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.daemonproc import DaemonProcess, config_with, tick_job

SETTLE = 1.0  # longer than the watcher's quiet period, to see any second reload


def reloads(daemon: DaemonProcess) -> int:
    return daemon.log().count("] reloaded ")


def text_of(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2)


def test_each_kind_of_save_reloads_once(folder: Path, daemons: list[DaemonProcess]) -> None:
    daemon = DaemonProcess(folder, config_with(tick_job("a", every="1h")))
    daemons.append(daemon)
    daemon.start()
    path = daemon.config_path
    saves = 0

    def expect_one_more(what: str) -> None:
        nonlocal saves
        saves += 1
        daemon.wait_log("] reloaded ", count=saves, timeout=5)
        time.sleep(SETTLE)
        assert reloads(daemon) == saves, f"{what}: {daemon.log()}"

    # In place, in several writes with pauses (several modify events, some mid-write).
    text = text_of(config_with(tick_job("a", every="1h"), tick_job("b", every="1h")))
    with open(path, "w") as handle:
        for start in range(0, len(text), 40):
            handle.write(text[start : start + 40])
            handle.flush()
            time.sleep(0.02)
    expect_one_more("in-place write")
    assert "added b;" in daemon.log()

    # sed -i: a temp file renamed over the config (only a move event).
    subprocess.run(["sed", "-i", 's/"b"/"c"/', str(path)], check=True)
    expect_one_more("sed -i")
    assert "added c; changed none; removed b" in daemon.log()

    # vim's backup dance: rename the original away, write a new file, delete the backup.
    backup = path.with_name("config.json~")
    path.rename(backup)
    path.write_text(text_of(config_with(tick_job("a", every="1h"))))
    backup.unlink()
    expect_one_more("vim backup-rename")
    assert "removed c;" in daemon.log()

    # A save without changes (touch, or the same bytes again) reloads nothing.
    path.write_text(path.read_text())
    os.utime(path)
    time.sleep(SETTLE)
    assert reloads(daemon) == saves


def test_reload_within_two_seconds(folder: Path, daemons: list[DaemonProcess]) -> None:
    daemon = DaemonProcess(folder, config_with(tick_job("a", every="1h")))
    daemons.append(daemon)
    daemon.start()
    began = time.monotonic()
    daemon.write_config(config_with(tick_job("a", every="1h"), tick_job("fast")))
    daemon.wait_runs("fast", 1, status="success", timeout=5)
    assert time.monotonic() - began < 2.5
