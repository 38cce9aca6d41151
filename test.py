"""The chain handler's tests: `lambda_handler` against the stand-in platform (a real local server).

Chains, merging, conditions, blackout, errors, retries, timeout, dry run, request IDs and
secrets; function entries are small modules written into tmp_path.
"""

from __future__ import annotations

import json
import json.decoder
import logging
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lambda_function import lambda_handler
from lookup import ClientPool
from poller.config.load import parse_config
from poller.run.chain import run_job
from poller.run.results import OUTPUT_MAX_BYTES, skipped_result
from tests import conftest
from tests.platform import PlatformServer, always, fail, slow

# test.py sits outside tests/, so tests/conftest.py's fixtures are not found on their own.
platform = conftest.platform
fake_clock = conftest.fake_clock

API_KEY_VAR = "POLLER_TEST_API_KEY"
PASSWORD_VAR = "POLLER_TEST_PASSWORD"
TOKEN_VAR = "POLLER_TEST_TOKEN"
HTTP_TOKEN = "http-token-5f2a9c"

FUNCTIONS = """
import time


def add(data, context):
    context.logger.info("add got keys %s", sorted(data))
    return {"n": data.get("n", 0) + 1}


def tag_a(data, context):
    return {"a": 1, "shared": "a"}


def tag_b(data, context):
    return {"b": 2, "shared": "b"}


def seen(data, context):
    return {
        "input": data,
        "dry_run": context.dry_run,
        "job_id": context.job_id,
        "run_id": context.run_id,
        "scheduled_for": context.scheduled_for,
    }


def boom(data, context):
    raise ValueError("boom")


def slow(data, context):
    time.sleep(data.get("sleep", 0.4))
    return {"slept": True}


def leave(data, context):
    raise SystemExit(3)


def listed(data, context):
    return [1, 2]


def big(data, context):
    return {"blob": "x" * 100_000}
"""


@pytest.fixture
def fns(tmp_path: Path) -> Iterator[str]:
    """The name of a fresh function module in tmp_path (unique, as module names are global)."""
    name = "chainfns_" + re.sub(r"\W", "_", tmp_path.name)
    (tmp_path / f"{name}.py").write_text(FUNCTIONS, encoding="utf-8")
    yield name
    sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch, platform: PlatformServer) -> None:
    monkeypatch.setenv(API_KEY_VAR, platform.api_key)
    monkeypatch.setenv(PASSWORD_VAR, platform.password)
    monkeypatch.setenv(TOKEN_VAR, HTTP_TOKEN)


def environments(platform: PlatformServer) -> dict[str, Any]:
    fast = {"retries": 1, "backoff_seconds": 0, "timeout_seconds": 5}
    return {
        "live": {
            "base_url": platform.url,
            "auth": {"type": "api_key", "header": "X-API-Key", "value": "${POLLER_TEST_API_KEY}"},
            **fast,
        },
        "sandbox": {
            "base_url": platform.url,
            "auth": {
                "type": "session",
                "login_path": "/login",
                "username": platform.username,
                "password": "${POLLER_TEST_PASSWORD}",
            },
            **fast,
        },
    }


def event(
    platform: PlatformServer,
    tmp_path: Path,
    steps: list[list[Any]],
    *,
    job: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "job": {
            "id": "job-1",
            "every": "1h",
            "environment": "live",
            "integrationIDs": steps,
            **(job or {}),
        },
        "environments": environments(platform),
        "config_dir": str(tmp_path),
        **extra,
    }


def run(event: dict[str, Any]) -> dict[str, Any]:
    result = lambda_handler(event, None)
    json.dumps(result)  # JSON-ready as it is
    return result


def statuses(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(step["id"], step["status"]) for step in result["steps"]]


def request_ids(platform: PlatformServer) -> list[str]:
    return [r.headers["X-Request-ID"] for r in platform.requests]


# --- chains -----------------------------------------------------------------------------


def test_each_step_gets_the_previous_steps_output(platform: PlatformServer, tmp_path: Path) -> None:
    result = run(event(platform, tmp_path, [["A"], ["B"]], job={"input": {"n": 1}}))

    assert result["status"] == "success"
    assert result["reason"] is None
    assert platform.calls("A")[0].body == {"n": 1}
    first = {"integration_id": "A", "input": {"n": 1}, "count": 1}
    assert platform.calls("B")[0].body == first
    assert result["output"] == {"integration_id": "B", "input": first, "count": 1}
    assert [
        (s["id"], s["status"], s["attempts"], s["step"], s["entry"]) for s in result["steps"]
    ] == [
        ("A", "success", 1, 0, 0),
        ("B", "success", 1, 1, 0),
    ]
    assert all(s["error"] is None and s["duration_ms"] >= 0 for s in result["steps"])


def test_a_steps_entries_get_the_same_input_and_merge_left_to_right(
    platform: PlatformServer, tmp_path: Path, fns: str
) -> None:
    steps = [
        [
            {"function": f"{fns}:tag_a"},
            {"id": "A", "input": {"extra": True}},
            {"function": f"{fns}:tag_b"},
        ],
        [{"function": f"{fns}:seen"}],
    ]
    result = run(event(platform, tmp_path, steps, input={"n": 1}))

    assert result["status"] == "success"
    assert platform.calls("A")[0].body == {"n": 1, "extra": True}
    merged = result["output"]["input"]
    assert merged == {
        "a": 1,
        "shared": "b",
        "integration_id": "A",
        "input": {"n": 1, "extra": True},
        "count": 1,
        "b": 2,
    }


def test_false_conditions_skip_entries_with_the_reason(
    platform: PlatformServer, tmp_path: Path, fns: str
) -> None:
    steps = [
        [{"function": f"{fns}:add"}],
        [
            {"id": "A", "when": {"token": "n", "gt": 5}},
            {"id": "B", "when": [{"token": "n", "equals": 2}, {"token": "n", "lt": 3}]},
        ],
        [{"id": "C", "when": {"token": "input.deep", "exists": True}}],
    ]
    result = run(event(platform, tmp_path, steps, job={"input": {"n": 1}}))

    assert result["status"] == "success"
    assert statuses(result) == [
        (f"function:{fns}:add", "success"),
        ("A", "skipped"),
        ("B", "success"),
        ("C", "skipped"),
    ]
    assert result["steps"][1]["reason"] == "n = 2, expected > 5"
    assert (
        result["steps"][3]["reason"]
        == 'input.deep is missing (input has no key "deep"), expected it'
    )
    assert platform.calls("A") == [] and platform.calls("C") == []
    # Every entry of the last step skipped: its input passes through as the output.
    assert result["output"] == {"integration_id": "B", "input": {"n": 2}, "count": 1}


# --- blackout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "scheduled_for", "reason"),
    [
        ({"blackout_days": [6]}, "2024-05-05T10:00:00+00:00", "blackout day (Sunday)"),
        ({"blackout_days": ["sat", "sun"]}, "2024-05-04T10:00:00+00:00", "blackout day (Saturday)"),
        (
            {"blackout_dates": ["2024-05-01"]},
            "2024-05-01T23:30:00+00:00",
            "blackout date 2024-05-01",
        ),
        (
            {"blackout_days": [6], "timezone": "Pacific/Auckland"},
            "2024-05-04T13:00:00+00:00",
            "blackout day (Sunday)",
        ),
        (
            {"blackout_dates": ["2024-05-02"], "timezone": "Pacific/Auckland"},
            "2024-05-01T23:30:00+00:00",
            "blackout date 2024-05-02",
        ),
    ],
    ids=["day", "day-name", "date", "day-in-job-zone", "date-in-job-zone"],
)
def test_blackout_skips_the_run_and_force_overrides(
    platform: PlatformServer, tmp_path: Path, job: dict[str, Any], scheduled_for: str, reason: str
) -> None:
    base = event(
        platform,
        tmp_path,
        [["A"]],
        job={"timezone": "UTC", **job},
        run={"trigger": "schedule", "scheduled_for": scheduled_for},
    )
    skipped = run(base)

    assert (skipped["status"], skipped["reason"], skipped["steps"]) == ("skipped", reason, [])
    assert skipped["scheduled_for"] == scheduled_for
    assert skipped["trigger"] == "schedule"
    assert platform.requests == []

    forced = run({**base, "force": True})
    assert forced["status"] == "success"
    assert len(platform.calls("A")) == 1


def test_blackout_of_a_manual_run_is_judged_now(platform: PlatformServer, tmp_path: Path) -> None:
    every_day = {"blackout_days": list(range(7)), "timezone": "UTC"}
    result = run(event(platform, tmp_path, [["A"]], job=every_day))

    today = datetime.now(UTC).strftime("%A")
    assert (result["status"], result["reason"]) == ("skipped", f"blackout day ({today})")
    assert result["scheduled_for"] is None
    assert platform.requests == []


# --- errors -----------------------------------------------------------------------------


def test_a_failed_entry_stops_the_chain_after_its_retries(
    platform: PlatformServer, tmp_path: Path
) -> None:
    platform.script("B", always(500))
    result = run(event(platform, tmp_path, [["A"], ["B", "C"], ["D"]]))

    assert result["status"] == "failed"
    assert statuses(result) == [
        ("A", "success"),
        ("B", "failed"),
        ("C", "skipped"),
        ("D", "skipped"),
    ]
    failed = result["steps"][1]
    assert failed["attempts"] == 2
    assert re.search(r"B at 127\.0\.0\.1:\d+ failed after 2 attempts: HTTP 500", failed["error"])
    assert result["reason"] == failed["error"]
    assert result["steps"][2]["reason"] == "not run: " + failed["error"]
    assert len(platform.calls("B")) == 2
    assert platform.calls("C") == [] and platform.calls("D") == []
    # The output of a stopped run is the input of the step that stopped it.
    assert result["output"] == {"integration_id": "A", "input": {}, "count": 1}


def test_continue_on_error_records_the_failure_and_goes_on(
    platform: PlatformServer, tmp_path: Path
) -> None:
    platform.script("B", always(500))
    steps = [["A"], [{"id": "B", "continue_on_error": True}], ["C"]]
    result = run(event(platform, tmp_path, steps))

    assert (result["status"], result["reason"]) == ("success", None)
    assert statuses(result) == [("A", "success"), ("B", "failed"), ("C", "success")]
    assert "HTTP 500" in result["steps"][1]["error"]
    # B produced nothing, so C gets A's output.
    assert platform.calls("C")[0].body == {"integration_id": "A", "input": {}, "count": 1}


def test_a_retried_call_sends_the_same_request_id(platform: PlatformServer, tmp_path: Path) -> None:
    platform.script("A", fail(1, 503))
    result = run(event(platform, tmp_path, [["A"]]))

    assert result["status"] == "success"
    assert result["steps"][0]["attempts"] == 2
    first, second = platform.calls("A")
    assert first.headers["X-Request-ID"] == second.headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("function", "error"),
    [
        ("boom", "ValueError: boom"),
        ("leave", "SystemExit: 3"),
        ("listed", r"function {fns}:listed returned list, expected a dict"),
        ("missing", r"function {fns}:missing: module {fns} has no callable 'missing'"),
    ],
    ids=["raises", "sys-exit", "not-a-dict", "no-such-callable"],
)
def test_a_failing_function_fails_the_run_with_its_error(
    platform: PlatformServer, tmp_path: Path, fns: str, function: str, error: str
) -> None:
    steps = [[{"function": f"{fns}:{function}"}], ["A"]]
    result = run(event(platform, tmp_path, steps))

    expected = error.format(fns=fns)
    assert (result["status"], result["reason"]) == ("failed", expected)
    assert result["steps"][0]["error"] == expected
    assert platform.requests == []


def test_an_unimportable_module_fails_the_run(platform: PlatformServer, tmp_path: Path) -> None:
    steps = [[{"function": "no_such_module_here:run"}]]
    result = run(event(platform, tmp_path, steps, job={"environment": None}))

    assert result["status"] == "failed"
    assert result["reason"].startswith(
        f"function no_such_module_here:run: cannot import no_such_module_here from {tmp_path}"
    )
    assert str(tmp_path) not in sys.path


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("os:getcwd", "it is " + os.__file__),
        ("json.decoder:scanstring", "it is " + json.decoder.__file__),
        ("sys:exit", "it is built in"),
    ],
)
def test_functions_come_from_the_config_folder_only(
    platform: PlatformServer, tmp_path: Path, ref: str, why: str
) -> None:
    # Anything importable on sys.path was callable: a config (or an edit through the API)
    # could reach the standard library and every installed package.
    result = run(event(platform, tmp_path, [[{"function": ref}]], job={"environment": None}))
    module = ref.partition(":")[0]
    assert result["status"] == "failed"
    assert result["reason"] == (
        f"function {ref}: cannot import {module} from {tmp_path}: {why}; "
        "functions come from the config's folder only"
    )


def test_an_undefined_environment_fails_the_run(platform: PlatformServer, tmp_path: Path) -> None:
    result = run(event(platform, tmp_path, [["A"]], job={"environment": "nowhere"}))

    assert (result["status"], result["reason"]) == (
        "failed",
        "environment 'nowhere' is not defined",
    )
    assert result["steps"][0]["attempts"] == 0


def test_a_run_past_its_timeout_fails_and_runs_nothing_more(
    platform: PlatformServer, tmp_path: Path, fns: str
) -> None:
    steps = [[{"function": f"{fns}:slow"}], ["A"]]
    result = run(event(platform, tmp_path, steps, job={"timeout_seconds": 0.2}))

    assert (result["status"], result["reason"]) == ("failed", "timeout after 0.2s")
    assert statuses(result) == [(f"function:{fns}:slow", "success"), ("A", "skipped")]
    assert result["steps"][1]["reason"] == "not run: timeout after 0.2s"
    assert platform.requests == []


def test_the_timeout_cuts_a_slow_call_short(platform: PlatformServer, tmp_path: Path) -> None:
    platform.script("A", slow(2.0))
    result = run(event(platform, tmp_path, [["A"], ["B"]], job={"timeout_seconds": 0.3}))

    assert (result["status"], result["reason"]) == ("failed", "timeout after 0.3s")
    assert statuses(result) == [("A", "failed"), ("B", "skipped")]
    assert result["steps"][0]["duration_ms"] < 1500
    assert platform.calls("B") == []


# --- dry run, request ids, secrets ------------------------------------------------------


def test_a_dry_run_sends_nothing(
    platform: PlatformServer, tmp_path: Path, fns: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    steps = [
        ["A"],
        [{"http": {"method": "POST", "url": f"{platform.url}/echo?key=v", "json": {"x": 1}}}],
        [{"function": f"{fns}:seen"}],
    ]
    result = run(event(platform, tmp_path, steps, job={"input": {"n": 1}}, dry_run=True))

    assert result["status"] == "success"
    assert platform.requests == []
    assert result["output"]["dry_run"] is True and result["dry_run"] is True
    assert result["output"]["input"] == {"n": 1}  # dry-run calls pass their input on
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"dry run: would POST {platform.url}/integrations/A/execute") for m in messages
    )
    assert any(
        m.startswith(f"dry run: would POST {platform.url}/echo and a JSON body") for m in messages
    )
    assert not any("key=v" in m for m in messages)


def test_request_ids_repeat_for_the_same_fire(platform: PlatformServer, tmp_path: Path) -> None:
    def fire(scheduled_for: str | None) -> list[str]:
        platform.reset()
        trigger = "schedule" if scheduled_for else "manual"
        run(
            event(
                platform,
                tmp_path,
                [["A", "B"], ["C"]],
                run={"trigger": trigger, "scheduled_for": scheduled_for},
            )
        )
        ids = request_ids(platform)
        assert len(set(ids)) == 3
        return ids

    first = fire("2024-05-01T08:00:00+00:00")
    assert fire("2024-05-01T10:00:00+02:00") == first  # the same instant
    assert fire("2024-05-01T08:01:00+00:00") != first
    assert fire(None) != fire(None)


def test_secrets_appear_in_no_result_and_no_log_line(
    platform: PlatformServer, tmp_path: Path, fns: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    platform.script("B", always(500, {"error": "bad", "echo": "nothing secret"}))
    steps = [
        ["A"],
        [{"id": "B", "continue_on_error": True}],
        [
            {
                "http": {
                    "url": f"{platform.url}/echo",
                    "headers": {"Authorization": "Bearer ${POLLER_TEST_TOKEN}"},
                }
            }
        ],
        [{"function": f"{fns}:add"}],
    ]
    results = [
        run(event(platform, tmp_path, steps, job={"environment": env}, dry_run=dry_run))
        for env in ("live", "sandbox")
        for dry_run in (False, True)
    ]

    assert [r["status"] for r in results] == ["success"] * 4
    assert len(platform.logins()) == 1
    assert platform.calls("A")[0].headers["X-API-Key"] == platform.api_key
    assert platform.requests[-1].headers["Authorization"] == f"Bearer {HTTP_TOKEN}"
    text = json.dumps(results) + "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.__dict__}" for r in caplog.records
    )
    for secret in (platform.api_key, platform.password, HTTP_TOKEN):
        assert secret not in text


def test_every_log_line_of_a_run_names_its_job_and_run(
    platform: PlatformServer, tmp_path: Path, fns: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    steps = [[{"function": f"{fns}:add"}], [{"id": "A", "when": {"token": "n", "gt": 5}}]]
    result = run(event(platform, tmp_path, steps))

    ours = [r for r in caplog.records if r.name.startswith("poller.")]
    assert {(r.job_id, r.run_id) for r in ours} == {("job-1", result["run_id"])}  # type: ignore[attr-defined]
    messages = [r.getMessage() for r in ours]
    assert messages[0] == "run started (trigger manual)"
    assert "add got keys []" in messages
    assert "integrationIDs[1][0] A skipped: n = 1, expected > 5" in messages
    assert re.fullmatch(r"run finished: success in \d+ ms \(trigger manual\)", messages[-1])


# --- events and results -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"job": None}, r'^invalid event: "job" is required'),
        (
            {"job": {"id": "x", "time": "25:00", "integrationIDs": [["A"]]}},
            r'^invalid event: job.time: "25:00" is not valid; expected "HH:MM"',
        ),
        (
            {"environments": {"live": {"base_url": "${POLLER_TEST_UNSET}"}}},
            r"^invalid event: environments.live.base_url: environment variable "
            r"POLLER_TEST_UNSET is not set",
        ),
        ({"run": {"trigger": "cron"}}, r"^invalid event: run.trigger 'cron' is not one of"),
        (
            {"run": {"scheduled_for": "2024-05-01T08:00:00"}},
            r"^invalid event: run.scheduled_for .* needs a UTC offset",
        ),
        ({"dry_run": "yes"}, r'^invalid event: "dry_run" must be true or false'),
        ({"surprise": 1}, r"^invalid event: unknown key surprise"),
    ],
    ids=[
        "no-job",
        "bad-time",
        "unset-variable",
        "bad-trigger",
        "naive-instant",
        "bad-dry-run",
        "unknown-key",
    ],
)
def test_an_invalid_event_is_a_failed_result(
    platform: PlatformServer, tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    result = run({**event(platform, tmp_path, [["A"]]), **change})

    assert result["status"] == "failed"
    assert re.search(reason, result["reason"])
    assert (result["steps"], result["output"]) == ([], None)
    assert platform.requests == []


def test_a_non_object_event_is_a_failed_result() -> None:
    result = lambda_handler([1, 2], None)  # type: ignore[arg-type]
    assert (result["status"], result["reason"]) == (
        "failed",
        "invalid event: expected a JSON object, got list",
    )


def test_plain_http_entries(platform: PlatformServer, tmp_path: Path) -> None:
    platform.serve_json("/json/list", [1, 2])
    steps = [
        [{"http": {"url": f"{platform.url}/echo", "params": {"q": "1"}}}],
        [
            {"http": {"url": f"{platform.url}/text?body=hi"}},
            {"http": {"url": f"{platform.url}/json/list"}},
        ],
    ]
    result = run(event(platform, tmp_path, steps, input={"not": "sent"}))

    assert result["status"] == "success"
    echo = platform.requests[0]
    assert (echo.method, echo.query, echo.body) == ("GET", {"q": "1"}, None)
    assert result["output"] == {"text": "hi", "data": [1, 2]}
    assert result["steps"][0]["id"] == f"http:GET {platform.url}/echo"


def test_a_big_output_is_capped(platform: PlatformServer, tmp_path: Path, fns: str) -> None:
    result = run(event(platform, tmp_path, [[{"function": f"{fns}:big"}]]))

    output = result["output"]
    assert result["status"] == "success"
    assert output["truncated"] is True
    assert output["size"] > OUTPUT_MAX_BYTES
    assert output["preview"].startswith('{"blob":"xxx')
    assert len(json.dumps(output)) < 2000


def test_results_round_trip_and_carry_the_run(
    platform: PlatformServer, tmp_path: Path, fns: str
) -> None:
    result = run(
        event(
            platform,
            tmp_path,
            [["A"], [{"function": f"{fns}:seen"}]],
            run={"run_id": "run-7", "trigger": "catch-up", "scheduled_for": "2024-05-01T08:00:00Z"},
        )
    )

    assert (result["run_id"], result["trigger"]) == ("run-7", "catch-up")
    assert result["scheduled_for"] == "2024-05-01T08:00:00+00:00"
    assert result["output"]["scheduled_for"] == result["scheduled_for"]  # one ISO format
    assert result["output"]["run_id"] == "run-7"
    assert list(result) == [
        "run_id",
        "job_id",
        "trigger",
        "scheduled_for",
        "started_at",
        "finished_at",
        "status",
        "reason",
        "steps",
        "output",
        "dry_run",
        # SPEC §9: change detection, fan-out counts and alerts
        "changed",
        "diff",
        "items_processed",
        "items_succeeded",
        "items_failed",
        "changes_detected",
        "errors",
        "alerts",
        "alerts_sent",
        "alert_errors",
    ]
    assert result["dry_run"] is False
    at = datetime(2024, 5, 1, 8, tzinfo=UTC)
    skipped = skipped_result("job-1", "already running", trigger="schedule", at=at).to_dict()
    assert skipped["status"] == "skipped" and skipped["started_at"] == "2024-05-01T08:00:00+00:00"


def test_run_job_merges_the_given_input_and_never_raises(
    platform: PlatformServer, tmp_path: Path, fake_clock: conftest.FakeClock
) -> None:
    raw = event(platform, tmp_path, [["A"]], job={"input": {"a": 1, "b": 1}})
    text = json.dumps({"environments": raw["environments"], "jobs": [raw["job"]]})
    config = parse_config(text, tmp_path / "config.json")
    clients = ClientPool({}, clock=fake_clock)  # the environment's secrets never reach it
    result = run_job(config.jobs[0], config, clients, input={"b": 2}, clock=fake_clock)

    assert (result.status, result.reason) == ("failed", "environment 'live' is not defined")
    assert result.started_at == fake_clock.now()
    live = ClientPool(config.environments, clock=fake_clock)
    try:
        result = run_job(config.jobs[0], config, live, input={"b": 2}, clock=fake_clock)
    finally:
        live.close()
    assert result.status == "success"
    assert platform.calls("A")[0].body == {"a": 1, "b": 2}
