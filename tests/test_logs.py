"""Logging: redaction, rate limiting, JSON lines, and no secret in the real daemon's log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.logs import RateLimitFilter, run_context, setup_logging
from poller.redaction import MASK, Redactor
from tests.daemonproc import DaemonProcess, config_with
from tests.platform import PlatformServer, always

SECRET = "hunter2-very-secret"


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs" / "poller.log"
    yield path
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_secrets_are_redacted_in_messages_and_tracebacks(log_file: Path) -> None:
    redactor = Redactor([SECRET])
    setup_logging(log_file, stderr=False, redactor=redactor)
    log = logging.getLogger("poller.test")
    log.info("logging in with %s", SECRET)
    try:
        raise ValueError(f"bad password {SECRET}")
    except ValueError:
        log.exception("login failed")
    redactor.add("token-learnt-at-run-time")
    log.info("calling http://svc:pw-in-url@host/x?token=%s&page=2", "token-learnt-at-run-time")
    text = log_file.read_text()
    assert SECRET not in text and "pw-in-url" not in text and "learnt" not in text
    assert f"logging in with {MASK}" in text and f"bad password {MASK}" in text
    assert f"calling http://{MASK}@host/x?token={MASK}&page=2" in text


def test_log_files_are_readable_by_owner_and_group_only(log_file: Path) -> None:
    log_file.parent.mkdir()
    log_file.write_text("an older Poller's line\n")
    log_file.chmod(0o644)
    setup_logging(log_file, stderr=False)
    logging.getLogger("poller.test").info("a line")
    assert log_file.stat().st_mode & 0o777 == 0o640
    fresh = log_file.with_name("fresh.log")
    setup_logging(fresh, stderr=False)
    logging.getLogger("poller.test").info("a line")
    assert fresh.stat().st_mode & 0o777 == 0o640


def test_run_lines_carry_job_and_run_ids(log_file: Path) -> None:
    setup_logging(log_file, stderr=False)
    with run_context("job-7", "run-42"):
        logging.getLogger("poller.run.chain").info("step %d", 1)
    logging.getLogger("poller").info("not about a run")
    lines = log_file.read_text().splitlines()
    assert lines[0].endswith("INFO poller.run.chain [job=job-7 run=run-42] step 1")
    assert "[job=- run=-] not about a run" in lines[1]


def test_json_lines(log_file: Path) -> None:
    setup_logging(log_file, log_format="json", stderr=False)
    with run_context("j", "r"):
        logging.getLogger("poller.run.chain").warning("odd: %s", "x")
    entry = json.loads(log_file.read_text())
    assert entry["level"] == "WARNING" and entry["message"] == "odd: x"
    assert (entry["job_id"], entry["run_id"]) == ("j", "r")


def test_a_message_in_a_tight_loop_is_rate_limited(log_file: Path) -> None:
    setup_logging(log_file, stderr=False)
    log = logging.getLogger("poller.loop")
    for i in range(10_000):
        log.error("connection refused (%d)", i)
    lines = log_file.read_text().splitlines()
    assert len(lines) == 10


def test_suppressed_count_is_reported(log_file: Path) -> None:
    limiter = RateLimitFilter(burst=1, window_seconds=3600)

    def record() -> logging.LogRecord:
        return logging.LogRecord("x", logging.INFO, "", 0, "again %s", ("a",), None)

    assert limiter.filter(record())
    assert not limiter.filter(record())
    assert not limiter.filter(record())
    limiter.window_seconds = 0  # the window has passed
    later = record()
    assert limiter.filter(later)
    assert later.getMessage() == "again a (and 2 similar lines suppressed)"


def test_the_limiter_forgets_its_oldest_keys_first() -> None:
    limiter = RateLimitFilter(burst=1, window_seconds=3600, max_keys=3)

    def record(run_id: str) -> logging.LogRecord:
        line = logging.LogRecord("x", logging.INFO, "", 0, "run finished", None, None)
        line.run_id = run_id
        return line

    assert all(limiter.filter(record(run)) for run in "abcd")  # a fourth key: "a" goes
    assert not limiter.filter(record("d"))  # still limited: it is remembered
    assert limiter.filter(record("a"))  # forgotten, so it counts from the start again


def test_daemon_log_has_no_secret(
    folder: Path, platform: PlatformServer, daemons: list[DaemonProcess]
) -> None:
    config = config_with(
        {"id": "calls", "every": "1s", "integrationIDs": [["i1"]]}, platform=platform
    )
    config["environments"]["live"]["auth"] = {
        "type": "session",
        "login_path": "/login",
        "username": "alice",
        "password": "${PW}",
    }
    platform.script("i1", always(500, {"echo": platform.password}))
    daemon = DaemonProcess(folder, config, env={"PW": platform.password})
    daemons.append(daemon)
    daemon.start()
    runs = daemon.wait_runs("calls", 2, status="failed")
    log = daemon.log()
    assert "HTTP 500" in log
    assert platform.password not in log
    assert platform.password not in json.dumps(runs)
    assert f"[job=calls run={runs[0]['run_id']}]" in log
