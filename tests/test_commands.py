"""The commands as a new user runs them beside a daemon (issue 14): --config anywhere, no
secrets needed to read, Ctrl-C and closed pipes without tracebacks, every problem at once,
fires counted as the daemon counts them, a history that says what it does not know.

Real `python app.py` subprocesses, real SQLite files, the stand-in platform.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from poller.run.results import StepResult, skipped_result, started_result
from poller.store import SqliteStore
from tests import daemonproc
from tests.daemonproc import REPO, DaemonProcess, config_with, launch, tick_job, wait_until, write
from tests.platform import PlatformServer, always, slow

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "plat-password-9431"


def app(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python app.py ARGS` in `cwd`, with only PATH (and `env`) in its environment: a
    second terminal that lacks the daemon's secrets."""
    return daemonproc.app(*args, cwd=cwd, env={"PATH": os.environ["PATH"], **(env or {})})


def secret_config(platform_url: str = "http://127.0.0.1:9") -> dict[str, Any]:
    return {
        "environments": {
            "live": {
                "base_url": platform_url,
                "retries": 0,
                "auth": {
                    "type": "session",
                    "login_path": "/login",
                    "username": "alice",
                    "password": "${PLAT_PASSWORD}",
                },
            }
        },
        "jobs": [
            {"id": "orders-sync", "every": "10m", "integrationIDs": [["a1"]]},
            {"id": "orders-report", "time": "08:00", "integrationIDs": [["a2"]]},
        ],
    }


def keep(folder: Path, *records: Any) -> None:
    """Write run records into the folder's state database, as a daemon would have."""
    store = SqliteStore(folder / "data" / "poller.db")
    try:
        for record in records:
            store.save(record)
    finally:
        store.close()


# --- 1. --config before or after the command ------------------------------------------


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_config_option_before_or_after_the_command(tmp_path: Path, before: bool) -> None:
    write(tmp_path, {"jobs": [{"id": "wrong-file", "time": "01:00", "integrationIDs": [["x"]]}]})
    other = tmp_path / "other"
    other.mkdir()
    chosen = write(
        other, {"jobs": [{"id": "right-file", "time": "01:00", "integrationIDs": [["x"]]}]}
    )
    for command in ("check", "jobs", "history"):
        args = ["--config", str(chosen), command] if before else [command, "--config", str(chosen)]
        result = app(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "wrong-file" not in result.stdout
    assert "right-file" in app("--config", str(chosen), "check", cwd=tmp_path).stdout


def test_a_missing_config_names_its_absolute_path_and_how_to_name_another(
    tmp_path: Path,
) -> None:
    for args, env, named in [
        (["check"], {}, f"the default: config.json in the current folder {tmp_path}"),
        (["jobs", "--config", "nope.json"], {}, "named by --config"),
        (["history"], {"POLLER_CONFIG": "elsewhere.json"}, "named by $POLLER_CONFIG"),
        ([], {}, "the default"),  # the daemon
    ]:
        result = app(*args, cwd=tmp_path, env=env)
        assert result.returncode != 0
        assert f"no config file at {tmp_path}/" in result.stderr, result.stderr
        assert named in result.stderr
        assert "--config PATH" in result.stderr and "POLLER_CONFIG" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["check", "--config", ""], {}, "(--config)"),
        (["jobs", "--config", "sub"], {}, "(--config)"),
        (["history"], {"POLLER_CONFIG": "sub"}, "($POLLER_CONFIG)"),
    ],
)
def test_a_config_path_naming_a_folder_says_to_name_the_file_in_it(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    write(tmp_path, {"jobs": []})  # ./config.json is there: --config "" must not fall back to it
    (tmp_path / "sub").mkdir()
    result = app(*args, cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert f"{named} is a folder; name the config file in it, e.g. " in result.stderr
    assert "/config.json" in result.stderr and "Traceback" not in result.stderr


# --- 2. reading needs no secrets ------------------------------------------------------


def test_reading_commands_need_none_of_the_daemons_secrets(tmp_path: Path) -> None:
    write(tmp_path, secret_config())
    keep(
        tmp_path, skipped_result("orders-sync", "blackout day (Monday)", trigger="schedule", at=T0)
    )
    history = app("history", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    assert "orders-sync" in history.stdout and "blackout day (Monday)" in history.stdout
    assert json.loads(app("history", "--json", cwd=tmp_path).stdout)[0]["job_id"] == "orders-sync"
    jobs = app("jobs", cwd=tmp_path)
    assert jobs.returncode == 0, jobs.stderr
    assert "orders-sync" in jobs.stdout and "skipped" in jobs.stdout
    # check says the variable is not set here, and still shows everything else.
    check = app("check", cwd=tmp_path)
    assert check.returncode == 1
    assert "1 problem, 2 jobs" in check.stdout
    assert "environments.live.auth.password: environment variable PLAT_PASSWORD is not set" in (
        check.stdout
    )
    assert "orders-report  (orders-report)  [enabled]" in check.stdout
    assert "next: " in check.stdout
    report = json.loads(app("check", "--json", cwd=tmp_path).stdout)
    assert report["valid"] is False and len(report["jobs"]) == 2
    assert "PLAT_PASSWORD" in report["errors"][0]["message"]
    # With the variable set it is valid; run still needs it.
    assert app("check", cwd=tmp_path, env={"PLAT_PASSWORD": SECRET}).returncode == 0
    run = app("run", "orders-sync", cwd=tmp_path)
    assert run.returncode == 2 and "PLAT_PASSWORD is not set" in run.stderr


def test_history_reads_on_while_the_config_is_mid_edit(tmp_path: Path) -> None:
    write(tmp_path, secret_config())
    keep(tmp_path, skipped_result("orders-sync", "misfire", trigger="schedule", at=T0))
    (tmp_path / "config.json").write_text('{"jobs": [{"id": "half-typed", "time": "8:"}]}')
    result = app("history", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "orders-sync" in result.stdout
    assert "is not valid now" in result.stderr and "app.py check" in result.stderr
    # Settings that cannot be read leave nothing to go on: said, with the place.
    (tmp_path / "config.json").write_text('{"settings": {"state_db": 5}, "jobs": []}')
    result = app("history", cwd=tmp_path)
    assert result.returncode == 2 and "config.json:1:15: settings.state_db" in result.stderr


@pytest.mark.parametrize("kind", ["another program's database", "not a database"])
def test_reading_commands_leave_a_file_that_is_not_a_poller_history_as_it_is(
    tmp_path: Path, kind: str
) -> None:
    write(tmp_path, {"jobs": [{"id": "sync", "every": "5m", "integrationIDs": [["x"]]}]})
    db = tmp_path / "data" / "poller.db"
    db.parent.mkdir()
    if kind == "not a database":
        db.write_bytes(b"\x07" * 3000)
    else:
        with sqlite3.connect(db) as other:
            other.execute("CREATE TABLE notes (text TEXT)")
        other.close()
    db.chmod(0o644)
    before = db.read_bytes()
    for command in ("history", "jobs"):
        result = app(command, cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"app.py: {db}: cannot be opened" in result.stderr
        assert "Traceback" not in result.stderr
    check = app("check", cwd=tmp_path)
    assert check.returncode == 0 and f"{db} cannot be read" in check.stdout
    assert db.read_bytes() == before and db.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in db.parent.iterdir()) == ["poller.db"]


# --- 3. Ctrl-C during `run` -----------------------------------------------------------


def run_config(platform: PlatformServer, **environment: Any) -> dict[str, Any]:
    return {
        "environments": {
            "live": {
                "base_url": platform.url,
                "retries": 0,
                "backoff_seconds": 0,
                "auth": {
                    "type": "session",
                    "login_path": "/login",
                    "username": "alice",
                    "password": "${PLAT_PASSWORD}",
                },
                **environment,
            }
        },
        "jobs": [{"id": "sync", "time": "00:00", "integrationIDs": [["first"], ["second"]]}],
    }


def interrupt_run(folder: Path, platform: PlatformServer, calls: int) -> tuple[int, str, str]:
    """Start `app.py run sync`, Ctrl-C it once `calls` calls reached the platform."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "run", "sync"],
        cwd=folder,
        env={"PATH": os.environ["PATH"], "PLAT_PASSWORD": platform.password},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: len(platform.calls("first")) + len(platform.calls("second")) >= calls,
            timeout=20,
            what=f"{calls} call(s) of the run",
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def test_ctrl_c_in_a_retry_backoff_records_the_run_interrupted_with_its_steps(
    tmp_path: Path, platform: PlatformServer
) -> None:
    write(tmp_path, run_config(platform, retries=3, backoff_seconds=60, backoff_max_seconds=60))
    platform.script("second", always(503))
    code, out, err = interrupt_run(tmp_path, platform, calls=2)
    assert code == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    record = json.loads(out)
    assert record["status"] == "interrupted"
    assert "stopped during retry backoff" in record["reason"]
    assert record["steps"][0]["status"] == "success"
    history = json.loads(app("history", "--json", cwd=tmp_path).stdout)
    assert [(r["run_id"], r["status"]) for r in history] == [(record["run_id"], "interrupted")]
    assert platform.password not in out + err


def test_ctrl_c_during_a_call_in_flight_still_prints_and_keeps_the_record(
    tmp_path: Path, platform: PlatformServer
) -> None:
    write(tmp_path, run_config(platform, timeout_seconds=60))
    platform.script("first", slow(30))
    code, out, err = interrupt_run(tmp_path, platform, calls=1)
    assert code == 130
    assert "Traceback" not in err
    record = json.loads(out)
    assert record["status"] == "interrupted" and record["finished_at"]
    assert "stopped by SIGINT while a call was in flight" in record["reason"]
    history = json.loads(app("history", "--json", cwd=tmp_path).stdout)
    assert history[0]["run_id"] == record["run_id"] and history[0]["status"] == "interrupted"


def test_ctrl_c_while_a_call_ends_soon_sends_no_further_call(
    tmp_path: Path, platform: PlatformServer
) -> None:
    write(tmp_path, run_config(platform, timeout_seconds=60))
    platform.script("first", slow(0.5))
    code, out, err = interrupt_run(tmp_path, platform, calls=1)
    assert code == 130 and "Traceback" not in err
    record = json.loads(out)
    assert record["status"] == "interrupted"
    assert record["reason"] == "stopped before integrationIDs[1][0] second"
    assert [s["status"] for s in record["steps"]] == ["success"]
    assert platform.calls("second") == []


def test_run_keeps_stdout_for_the_record_when_a_function_prints(tmp_path: Path) -> None:
    (tmp_path / "chatty.py").write_text(
        "def run(data, context):\n    print('progress: half way')\n    return {'n': 1}\n"
    )
    write(
        tmp_path,
        {"jobs": [{"id": "f", "time": "00:00", "integrationIDs": [[{"function": "chatty:run"}]]}]},
    )
    result = app("run", "f", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == {"n": 1}
    assert "progress: half way" in result.stderr


# --- 4. a pipe closed early -----------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "jobs", "history"])
def test_a_pager_that_quits_ends_the_command_quietly(tmp_path: Path, command: str) -> None:
    jobs = [{"id": f"job-{i:04d}", "time": "01:00", "integrationIDs": [["x"]]} for i in range(3000)]
    write(tmp_path, {"jobs": jobs})
    keep(
        tmp_path,
        *(
            skipped_result(f"job-{i:04d}", "misfire", trigger="schedule", at=T0)
            for i in range(1000)
        ),
    )
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), command, "--limit", "1000"]
        if command == "history"
        else [sys.executable, str(REPO / "app.py"), command],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # as `| head -1` does, then it quits
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


# --- 5. every problem at once ---------------------------------------------------------


def test_check_lists_every_problem_at_once(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text("def summarise(data, context):\n    return {}\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('no database here')\n")
    config = {
        "jobs": [
            {"id": "no-schedule-no-chain"},
            {
                "id": "both",
                "time": "08:00",
                "every": "10m",
                "description": "x" * 500,
                "integrationIDs": [["a"]],
            },
            {
                "id": "functions",
                "time": "09:00",
                "integrationIDs": [
                    [{"function": "tasks:summarise"}],
                    [{"function": "tasks:nothing"}],
                    [{"function": "missing:run"}],
                    [{"function": "broken:run"}],
                ],
            },
            {
                "id": "operator",
                "every": "1m",
                "integrationIDs": [[{"id": "a", "when": {"token": "count", "greater": 3}}]],
            },
        ]
    }
    write(tmp_path, config)
    result = app("check", cwd=tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert "jobs[0].integrationIDs: required field is missing" in out
    assert 'jobs[0]: expected exactly one of "time", "every", "cron" (found none)' in out
    assert (
        'jobs[1]: expected exactly one of "time", "every", "cron" (found "time" and "every")'
        in (out)
    )
    assert "xxxxxxxxxx" not in out  # the job itself is not dumped as "the value"
    assert 'when.greater: unknown field; did you mean "gt"?' in out
    # The functions that cannot be imported are listed beside the file's own problems.
    assert "jobs[2].integrationIDs[1][0].function: function tasks:nothing: module tasks has no" in (
        out
    )
    assert "jobs[2].integrationIDs[2][0].function: function missing:run: cannot import" in out
    assert "integrationIDs[3][0].function: function broken:run: importing it raised " in out
    assert "RuntimeError: no database here" in out
    assert "tasks:summarise" not in out
    del config["jobs"][:2]
    config["jobs"][1]["integrationIDs"][0][0]["when"] = {"token": "count", "gt": 3}
    write(tmp_path, config)
    result = app("check", cwd=tmp_path)
    assert result.returncode == 1
    assert "3 problems, 2 jobs" in result.stdout


def test_check_imports_a_hostile_module_without_leaking_or_ending(tmp_path: Path) -> None:
    (tmp_path / "noisy.py").write_text(
        "import os\nprint('hello from noisy')\n"
        "raise RuntimeError('login failed for ' + os.environ['PLAT_PASSWORD'])\n"
    )
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "stops.py").write_text("raise KeyboardInterrupt\n")
    config = secret_config()
    config["jobs"][0]["integrationIDs"] = [
        [{"function": "noisy:run"}],
        [{"function": "quits:run"}],
        [{"function": "stops:run"}],
    ]
    write(tmp_path, config)
    env = {"PLAT_PASSWORD": SECRET}
    result = app("check", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)  # the module's print went to stderr
    assert "hello from noisy" in result.stderr
    messages = [e["message"] for e in report["errors"]]
    assert any("RuntimeError: login failed for ***" in m for m in messages), messages
    assert any("raised SystemExit: 3" in m for m in messages), messages
    assert any("raised KeyboardInterrupt" in m for m in messages), messages
    assert SECRET not in result.stdout + result.stderr
    assert len(report["jobs"]) == 2


# --- 6. fires counted as the daemon counts them ---------------------------------------


def test_check_counts_every_jobs_from_the_daemons_stored_anchor(
    folder: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = launch(daemons, folder, config_with(tick_job("hourly", every="1h")))
    log = daemon.wait_log("job hourly (hourly): next fire ")
    daemon_next = log.split("job hourly (hourly): next fire ")[1].split()[0]
    fire = datetime.fromisoformat(daemon_next)
    after = (fire - timedelta(minutes=50)).isoformat()  # ten minutes after the anchor
    report = json.loads(app("check", "--json", "--after", after, cwd=folder).stdout)
    [job] = report["jobs"]
    assert job["anchor"] == "stored"
    assert datetime.fromisoformat(job["counted_from"]) == fire - timedelta(hours=1)
    assert datetime.fromisoformat(job["next_fires"][0]) == fire  # as the daemon said
    assert "anchors stored in" in report["state"]
    jobs = app("jobs", cwd=folder)
    assert jobs.returncode == 0
    assert fire.isoformat() in jobs.stdout.replace("+00:00", "+00:00")
    # Another grid has no anchor yet: counted from the instant asked, and said so.
    daemon.stop()
    daemon.write_config(config_with(tick_job("hourly", every="2h")))
    text = app("check", "--after", after, cwd=folder).stdout
    assert "(now: no anchor stored yet)" in text
    assert f"next: {(datetime.fromisoformat(after) + timedelta(hours=2)).isoformat()}" in text


def test_check_without_a_state_database_counts_from_now_and_says_so(tmp_path: Path) -> None:
    write(tmp_path, {"jobs": [{"id": "e", "every": "10m", "integrationIDs": [["x"]]}]})
    result = app("check", "--after", "2026-03-02T09:00:00.700+00:00", cwd=tmp_path)
    assert "no state database yet" in result.stdout
    assert "counted from: 2026-03-02T09:00:00+00:00 (now: no anchor stored yet)" in result.stdout
    assert "next: 2026-03-02T09:10:00+00:00" in result.stdout
    assert not (tmp_path / "data").exists()  # reading created nothing


# --- 7. history -----------------------------------------------------------------------


def history_records() -> list[Any]:
    long_reason = (
        "orders: platform-east failed after 3 attempts: HTTP 502 (Bad Gateway): upstream "
        "connect error or disconnect/reset before headers, reset reason: connection termination"
    )
    ok = dataclasses.replace(
        started_result("orders-sync", trigger="schedule", started_at=T0, scheduled_for=T0),
        finished_at=T0 + timedelta(seconds=2),
        status="success",
        steps=(StepResult("a1", "success", 0, 0, attempts=1, duration_ms=120),),
        output={"count": 3},
    )
    failed = dataclasses.replace(
        started_result("orders-sync", trigger="manual", started_at=T0 + timedelta(hours=1)),
        finished_at=T0 + timedelta(hours=1, seconds=5),
        status="failed",
        reason=long_reason,
        steps=(StepResult("a1", "failed", 0, 0, attempts=3, duration_ms=4000, error=long_reason),),
    )
    return [ok, failed]


def test_history_table_filters_and_one_run_in_full(tmp_path: Path) -> None:
    write(tmp_path, secret_config())
    ok, failed = history_records()
    keep(tmp_path, ok, failed)
    table = app("history", cwd=tmp_path).stdout.splitlines()
    assert table[0].split() == [
        "started",
        "job",
        "trigger",
        "status",
        "duration",
        "run",
        "id",
        "reason",
    ]
    assert failed.run_id in table[1] and ok.run_id in table[2]
    assert table[1].endswith(" …")  # shortened at a word, never mid-word
    assert "connection termination" not in table[1]
    assert all(len(line) < 220 for line in table)
    only_failed = app("history", "--status", "failed", cwd=tmp_path).stdout
    assert failed.run_id in only_failed and ok.run_id not in only_failed
    none = app("history", "orders-report", "--status", "failed", cwd=tmp_path)
    assert none.returncode == 0 and "no failed runs of orders-report yet" in none.stdout
    full = app("history", "--run", failed.run_id, cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    text = full.stdout
    assert "status     failed" in text and "connection termination" in text
    assert "1.1  a1     failed  3" in text
    assert "error: orders: platform-east failed" in text
    assert json.loads(app("history", "--run", ok.run_id, "--json", cwd=tmp_path).stdout)[
        "output"
    ] == {"count": 3}
    missing = app("history", "--run", "no-such-run", cwd=tmp_path)
    assert missing.returncode == 2 and "no run 'no-such-run'" in missing.stderr
    other_job = app("history", "orders-report", "--run", ok.run_id, cwd=tmp_path)
    assert other_job.returncode == 2
    assert f"run {ok.run_id} has job_id 'orders-sync', not 'orders-report'" in other_job.stderr
    other_status = app("history", "--run", ok.run_id, "--status", "failed", cwd=tmp_path)
    assert other_status.returncode == 2 and "has status 'success'" in other_status.stderr


@pytest.mark.parametrize(
    ("reason", "shown"),
    [
        ("RuntimeError: " + "x" * 100, "RuntimeError: " + "x" * 57 + "…"),
        ("y" * 100, "y" * 71 + "…"),
        ("short reason", "short reason"),
    ],
)
def test_history_shortens_a_long_word_within_it(tmp_path: Path, reason: str, shown: str) -> None:
    write(tmp_path, secret_config())
    keep(tmp_path, skipped_result("orders-sync", reason, trigger="schedule", at=T0))
    line = app("history", cwd=tmp_path).stdout.splitlines()[1]
    assert line.endswith("  " + shown)


def test_history_of_an_unknown_job_says_so_with_close_ids(tmp_path: Path) -> None:
    write(tmp_path, secret_config())
    keep(tmp_path, *history_records())
    typo = app("history", "orders-snyc", cwd=tmp_path)
    assert typo.returncode == 2
    assert "no job 'orders-snyc' in the config" in typo.stderr
    assert "did you mean orders-sync" in typo.stderr
    shouted = app("history", "ORDERS-SYNK", cwd=tmp_path)
    assert shouted.returncode == 2 and "did you mean orders-sync" in shouted.stderr
    known = app("history", "orders-report", cwd=tmp_path)
    assert known.returncode == 0 and "no runs of orders-report yet" in known.stdout
    many = {
        "jobs": [
            {"id": f"job-{i:04d}", "time": "01:00", "integrationIDs": [["x"]]} for i in range(3000)
        ]
    }
    write(tmp_path, many)
    run = app("run", "job-12345", cwd=tmp_path)
    assert run.returncode == 2 and "did you mean " in run.stderr and "job-1234" in run.stderr
    assert len(run.stderr) < 400  # not all 3000 ids
    write(tmp_path, secret_config())
    # A job removed from the config still shows the runs the database has of it.
    keep(tmp_path, skipped_result("retired", "misfire", trigger="schedule", at=T0))
    retired = app("history", "retired", cwd=tmp_path)
    assert retired.returncode == 0 and "misfire" in retired.stdout


# --- 8. jobs --------------------------------------------------------------------------


def test_jobs_is_a_quick_look(tmp_path: Path) -> None:
    config = secret_config()
    config["jobs"].append(
        {"id": "paused-one", "time": "07:00", "enabled": False, "integrationIDs": [["x"]]}
    )
    write(tmp_path, config)
    keep(tmp_path, *history_records())
    result = app("jobs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["job", "schedule", "next", "fire", "last", "run"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "every 10m" in rows["orders-sync"] and "failed " in rows["orders-sync"]
    assert "daily at 08:00" in rows["orders-report"] and "no runs yet" in rows["orders-report"]
    assert "paused" in rows["paused-one"]
    listed = json.loads(app("jobs", "--json", cwd=tmp_path).stdout)
    assert [job["id"] for job in listed] == ["orders-sync", "orders-report", "paused-one"]
    assert listed[0]["last_run"]["status"] == "failed" and listed[2]["next_fire"] is None


# --- 9. help --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["check"], ["jobs"], ["run"], ["history"]])
def test_help_speaks_to_users(tmp_path: Path, command: list[str]) -> None:
    result = app(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "SPEC" not in result.stdout and "§" not in result.stdout
    assert "--config" in result.stdout


# --- dry runs (issue 15) --------------------------------------------------------------


def test_a_dry_run_is_marked_as_one_everywhere(folder: Path, daemons: list[DaemonProcess]) -> None:
    config = {
        "environments": {"live": {"base_url": "http://127.0.0.1:9", "auth": {"type": "none"}}},
        "jobs": [{"id": "rehearse", "time": "00:00", "dry_run": True, "integrationIDs": [["a1"]]}],
    }
    write(folder, config)
    run = app("run", "rehearse", cwd=folder)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["status"] == "success" and record["dry_run"] is True
    assert "run finished: success (dry run: nothing was sent)" in run.stderr
    history = app("history", cwd=folder).stdout
    assert "success (dry run)" in history
    full = app("history", "--run", record["run_id"], cwd=folder).stdout
    assert "status     success (dry run: nothing was sent)" in full
    assert "[enabled, dry run: calls are logged, not sent]" in app("check", cwd=folder).stdout
    assert json.loads(app("check", "--json", cwd=folder).stdout)["jobs"][0]["dry_run"] is True
    assert "rehearse (dry run)" in app("jobs", cwd=folder).stdout
    daemon = launch(daemons, folder, config)
    daemon.wait_log("job rehearse (rehearse): next fire")
    assert "(dry run: its calls are logged, not sent)" in daemon.log()
