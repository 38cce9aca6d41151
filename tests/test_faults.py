"""What lands in config.json never ends the daemon: deep nesting (in the file and through the
API), a folder in the file's place, and a Kubernetes-style symlink swap that must be followed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.apiproc import api_settings, start_api_daemon
from tests.daemonproc import DaemonProcess, launch, run_app, tick_job, wait_until


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def check(folder: Path) -> subprocess.CompletedProcess[str]:
    return run_app(folder, "check")


def test_a_deeply_nested_config_is_a_located_error_and_a_valid_one_starts(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    deep = {"jobs": [tick_job("deep", every="1h", input=nested(300))]}
    (folder / "config.json").write_text(json.dumps(deep))
    done = check(folder)
    assert done.returncode == 1
    assert done.stdout == (
        "invalid config (1 problem):\n  config.json:1:466: "
        "nested more than 64 levels deep (objects and lists inside each other)\n"
    )
    # As deep as is allowed: check calls it valid, so the daemon starts and reloads it.
    daemon = launch(daemons, folder, {"jobs": [tick_job("t", every="1s")]})
    allowed = {"jobs": [tick_job("t", every="1s"), tick_job("deep", every="1h", input=nested(60))]}
    daemon.replace_config(allowed)
    assert check(folder).returncode == 0
    daemon.wait_log("reloaded", timeout=10)
    daemon.replace_config(deep)
    daemon.wait_log("nested more than 64 levels deep", timeout=10)
    runs = len(daemon.runs("t"))
    daemon.wait_runs("t", runs + 2)  # still firing on the last good config
    assert daemon.proc is not None and daemon.proc.poll() is None


@pytest.mark.parametrize("depth", [300, 30_000])
def test_a_deeply_nested_api_body_gets_422_and_changes_nothing(tmp_path: Path, depth: int) -> None:
    config = {"settings": {"api": api_settings()}, "jobs": [tick_job("t", every="1h")]}
    api = start_api_daemon(tmp_path, config)
    try:
        before = api.daemon.config_path.read_bytes()
        # 30,000 levels are cut to fit the 64 KiB body limit: too deep before it is invalid.
        head = json.dumps(tick_job("evil", every="1h"))[:-1]
        body = (head + ', "input": ' + '{"a": ' * depth + "{}" + "}" * (depth + 1))[: 60 * 1024]
        answer = api.post("/jobs", data=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text
        problem = answer.json()["problems"][0]
        assert (
            problem["path"] == "body" and "nested more than 64 levels deep" in problem["expected"]
        )
        assert api.daemon.config_path.read_bytes() == before
        assert api.get("/health").status_code == 200
    finally:
        assert api.daemon.stop() == 0


def test_a_folder_in_place_of_the_config_is_reported_and_the_daemon_keeps_running(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = launch(daemons, folder, {"jobs": [tick_job("t", every="1s")]})
    saved = daemon.config_path.read_text()
    daemon.config_path.unlink()
    daemon.config_path.mkdir()
    daemon.wait_log("keeping the last good config")
    assert "cannot be read (Is a directory)" in daemon.log()
    runs = len(daemon.runs("t"))
    daemon.wait_runs("t", runs + 2)
    daemon.config_path.rmdir()
    daemon.config_path.write_text(saved.replace('"1s"', '"2s"'))
    daemon.wait_log("reloaded", timeout=10)
    assert daemon.proc is not None and daemon.proc.poll() is None


def publish(folder: Path, version: str, config: dict[str, Any]) -> None:
    """What Kubernetes does to a ConfigMap volume: a new folder, then swap the ..data link."""
    (folder / version).mkdir()
    (folder / version / "config.json").write_text(json.dumps(config))
    (folder / "..data_tmp").symlink_to(version)
    (folder / "..data_tmp").replace(folder / "..data")


def test_a_configmap_style_symlink_swap_is_followed(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    publish(folder, "..v1", {"jobs": [tick_job("t", every="1s")]})
    link = folder / "config.json"
    daemon = DaemonProcess(folder, {"jobs": []})
    link.unlink()
    link.symlink_to("..data/config.json")
    daemons.append(daemon)
    daemon.start()
    publish(folder, "..v2", {"jobs": [tick_job("t", every="1s"), tick_job("u", every="1s")]})
    daemon.wait_log("reloaded", timeout=10)
    assert "added u" in daemon.log()
    daemon.wait_runs("u", 1)
    # SIGHUP reads through the link as it is now, too.
    publish(folder, "..v3", {"jobs": [tick_job("v", every="1s")]})
    daemon.signal(1)  # SIGHUP
    wait_until(lambda: "added v" in daemon.log(), what="the third version applied")
    assert (folder / "..data").readlink() == Path("..v3")


def test_a_burst_of_signals_never_hangs_the_daemon(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    # Signal handlers run on the main thread; one that takes a lock (threading.Event.set)
    # and is interrupted by the next signal waits for itself forever.
    daemon = launch(daemons, folder, {"jobs": [tick_job("t", every="1s")]})
    assert daemon.proc is not None
    until = time.monotonic() + 2
    while time.monotonic() < until:  # as fast as signals can be sent, for 2 s
        os.kill(daemon.proc.pid, signal.SIGHUP)
    for _ in range(20):
        os.kill(daemon.proc.pid, signal.SIGTERM)
    assert daemon.wait_exit(timeout=15) == 0
