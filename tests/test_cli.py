"""`app.py check`, `app.py run` and `--help` as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.daemonproc import REPO, app, write
from tests.platform import PlatformServer, always

VALID = {
    "settings": {"timezone": "Europe/London"},
    "jobs": [
        {"id": "nightly", "time": "01:30", "integrationIDs": [["a"]]},
        {
            "id": "hourly",
            "cron": "0 * * * *",
            "timezone": "America/New_York",
            "integrationIDs": [["a"]],
        },
        {"id": "weekend", "time": "09:00", "blackout_days": ["sun"], "integrationIDs": [["a"]]},
        {"id": "paused", "time": "10:00", "enabled": False, "integrationIDs": [["a"]]},
    ],
}


def test_check_valid(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = app("check", "--config", str(path), "--after", "2026-03-28T12:00:00+00:00")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"{path}: valid, 4 jobs" in out
    # 01:30 on 2026-03-29 does not exist in London: it fires at the end of the gap.
    assert "nightly  (nightly)  [enabled]" in out
    assert "  schedule: daily at 01:30  [Europe/London]" in out
    assert "  next: 2026-03-29T02:00:00+01:00\n  next: 2026-03-30T01:30:00+01:00" in out
    assert "hourly  (hourly)  [enabled]" in out
    # A paused job lists no fires: it would run none.
    assert "paused  (paused)  [paused: enabled is false]\n  schedule: daily at 10:00" in out
    assert "next: none while paused" in out
    assert "next: 2026-03-29T09:00:00+01:00  (skipped: blackout day (Sunday))" in out


def test_check_json_count_and_after(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = app(
        "check", "--json", "--count", "2", "--after", "2026-11-01T05:30:00Z", "--config", str(path)
    )
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["errors"] == []
    jobs = {job["id"]: job for job in report["jobs"]}
    assert set(jobs["nightly"]) >= {"id", "label", "enabled", "timezone", "next_fires"}
    assert jobs["paused"]["paused"] is True and jobs["paused"]["next_fires"] == []
    assert jobs["hourly"]["timezone"] == "America/New_York"
    # New York falls back at 06:00 UTC; 05:30 UTC is 01:30 in the first copy of 01:00,
    # and the hourly job fires again in the second copy.
    assert jobs["hourly"]["next_fires"] == [
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]
    assert jobs["nightly"]["next_fires"] == [
        "2026-11-02T01:30:00+00:00",
        "2026-11-03T01:30:00+00:00",
    ]


def test_check_naive_after_is_read_in_settings_timezone(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = app(
        "check", "--json", "--count", "1", "--after", "2026-07-01T01:29:00", "--config", str(path)
    )
    nightly = json.loads(result.stdout)["jobs"][0]
    assert nightly["next_fires"] == ["2026-07-01T01:30:00+01:00"]


def test_check_missing_comma_names_the_line(tmp_path: Path) -> None:
    text = (
        '{\n  "jobs": [\n    {"id": "a", "time": "10:00"\n     "integrationIDs": [["x"]]}\n  ]\n}\n'
    )
    path = write(tmp_path, text)
    result = app("check", "--config", str(path))
    assert result.returncode == 1
    assert "config.json:3:32: invalid JSON: expected ',' after this value" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_check_lists_three_bad_fields(tmp_path: Path) -> None:
    config = {
        "jobs": [
            {"id": "a", "time": "25:00", "integrationIDs": [["x"]]},
            {"id": "b", "every": "1m", "blackout_day": [6], "integrationIDs": [["x"]]},
            {"id": "c", "cron": "0 0 31 2 *", "integrationIDs": [["x"]]},
        ]
    }
    path = write(tmp_path, config)
    result = app("check", "--config", str(path))
    assert result.returncode == 1
    out = result.stdout
    assert "invalid config (3 problems):" in out
    assert 'jobs[0].time: "25:00" is not valid; expected "HH:MM"' in out
    assert 'jobs[1].blackout_day: unknown field; did you mean "blackout_days"?' in out
    assert 'jobs[2].cron: "0 0 31 2 *" is not valid' in out
    as_json = json.loads(app("check", "--json", "--config", str(path)).stdout)
    assert as_json["valid"] is False and as_json["jobs"] == []
    assert [e["path"] for e in as_json["errors"]] == [
        "jobs[0].time",
        "jobs[1].blackout_day",
        "jobs[2].cron",
    ]
    assert all(e["line"] and e["column"] and e["file"] == "config.json" for e in as_json["errors"])


def test_config_from_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    env = {"POLLER_CONFIG": str(path), "PATH": "/usr/bin:/bin"}
    result = app("check", cwd=tmp_path.parent, env=env)
    assert result.returncode == 0 and "4 jobs" in result.stdout


def test_shipped_config_checks_from_the_repo() -> None:
    result = app("check", cwd=REPO)
    assert result.returncode == 0, result.stdout
    assert "example-job  (Example Job)" in result.stdout


@pytest.mark.parametrize(
    "command", [[], ["check"], ["run"], ["history"]], ids=["daemon", "check", "run", "history"]
)
def test_help(command: list[str]) -> None:
    result = app(*command, "--help")
    assert result.returncode == 0
    assert "--config" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "--count", "0"], "out of range"),
        (["check", "--after", "soon"], "not an ISO 8601 instant"),
    ],
    ids=["count", "after"],
)
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = app(*args, "--config", str(write(tmp_path, VALID)))
    assert result.returncode == 2 and message in result.stderr


def platform_config(platform: PlatformServer, **job: Any) -> dict[str, Any]:
    return {
        "environments": {
            "live": {
                "base_url": platform.url,
                "retries": 1,
                "backoff_seconds": 0,
                "auth": {
                    "type": "session",
                    "login_path": "/login",
                    "username": "${PU:-alice}",
                    "password": "${PW}",
                },
            }
        },
        "jobs": [
            {
                "id": "example-job",
                "time": "00:00",
                "integrationIDs": [["66c6eb17b4d36"], ["5dd2b6522be4c"]],
                **job,
            }
        ],
    }


def run_job(tmp_path: Path, config: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    path = write(tmp_path, config)
    env = {"PW": "platform-password-31", "PATH": "/usr/bin:/bin"}
    return app("run", "example-job", "--config", str(path), *args, env=env)


def test_run_prints_the_result(tmp_path: Path, platform: PlatformServer) -> None:
    result = run_job(tmp_path, platform_config(platform, input={"since": "yesterday"}))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "success" and record["trigger"] == "manual"
    assert [s["id"] for s in record["steps"]] == ["66c6eb17b4d36", "5dd2b6522be4c"]
    second = platform.calls("5dd2b6522be4c")[0]
    assert second.body["integration_id"] == "66c6eb17b4d36"  # step 1's output fed step 2
    assert "platform-password-31" not in result.stdout + result.stderr
    assert "run finished" in (tmp_path / "logs" / "logfile.log").read_text()
    history = app(
        "history",
        "--json",
        "--config",
        str(tmp_path / "config.json"),
        env={"PW": "platform-password-31", "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(history.stdout)[0]["run_id"] == record["run_id"]


def test_run_failure_exits_1(tmp_path: Path, platform: PlatformServer) -> None:
    platform.script("66c6eb17b4d36", always(500))
    result = run_job(tmp_path, platform_config(platform))
    assert result.returncode == 1
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    assert "failed after 2 attempts: HTTP 500" in record["reason"]
    assert [s["status"] for s in record["steps"]] == ["failed", "skipped"]


def test_run_blackout_and_force(tmp_path: Path, platform: PlatformServer) -> None:
    config = platform_config(platform, blackout_days=[0, 1, 2, 3, 4, 5, 6])
    skipped = run_job(tmp_path, config)
    assert skipped.returncode == 0
    assert json.loads(skipped.stdout)["status"] == "skipped"
    assert not platform.calls("66c6eb17b4d36")
    forced = run_job(tmp_path, config, "--force")
    assert json.loads(forced.stdout)["status"] == "success"


def test_run_unknown_job_and_bad_config(tmp_path: Path, platform: PlatformServer) -> None:
    path = write(tmp_path, platform_config(platform))
    unknown = app("run", "nope", "--config", str(path), env={"PW": "x", "PATH": "/usr/bin"})
    assert unknown.returncode == 2
    assert "no job 'nope'" in unknown.stderr and "example-job" in unknown.stderr
    missing_secret = app("run", "example-job", "--config", str(path), env={"PATH": "/usr/bin"})
    assert missing_secret.returncode == 2
    assert "environment variable PW is not set" in missing_secret.stderr
    assert missing_secret.stdout == ""
