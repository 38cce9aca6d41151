"""config.json models and loading: every field, every error path, the seed example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller.config.chain import OPERATORS, Condition, FunctionEntry, HttpEntry, IntegrationEntry
from poller.config.environments import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    NoAuth,
    SessionAuth,
)
from poller.config.load import load_config, parse_config
from poller.errors import ConfigError
from poller.timeformat import format_duration, parse_duration

SEED = {
    "time": "00:00",
    "integrationIDs": [["66c6eb17b4d36"], ["5dd2b6522be4c"]],
    "blackout_days": [6],
    "environment": "live",
    "label": "Example Job",
}
REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, data: Any, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def load(tmp_path: Path, data: Any, environ: dict[str, str] | None = None) -> Any:
    return load_config(write(tmp_path, data), environ=environ or {})


def problems(tmp_path: Path, data: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, data, environ)
    return [p.render() for p in info.value.problems]


def job(**fields: Any) -> dict[str, Any]:
    return {"label": "J", "every": "1m", "integrationIDs": [["a"]], **fields}


def test_seed_example_as_bare_list(tmp_path: Path) -> None:
    config = load(tmp_path, [SEED])
    (only,) = config.jobs
    assert only.id == "example-job"
    assert only.label == "Example Job"
    assert only.enabled is True
    assert only.blackout_weekdays == {6}
    assert only.environment == "live"
    assert [[e for e in step] for step in only.integrationIDs] == [
        ["66c6eb17b4d36"],
        ["5dd2b6522be4c"],
    ]
    assert config.schedule(only).times == ((0, 0, 0),)


def test_seed_example_in_canonical_object(tmp_path: Path) -> None:
    config = load(tmp_path, {"$schema": "./config.schema.json", "jobs": [SEED]})
    assert config.jobs[0].id == "example-job"


def test_shipped_config_is_valid() -> None:
    config = load_config(REPO / "config.json", environ={})
    assert {j.id for j in config.jobs} == {"example-job", "disk-check"}


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, {"jobs": [job()]})
    s = config.settings
    assert (s.max_workers, s.log_format, s.log_level, s.timezone) == (8, "text", "INFO", None)
    assert s.log_file == str(tmp_path / "logs/logfile.log")
    assert s.state_db == str(tmp_path / "data/poller.db")
    assert (s.api.enabled, s.api.host, s.api.port, s.api.api_key) == (
        False,
        "127.0.0.1",
        8000,
        None,
    )
    j = config.jobs[0]
    assert (j.max_instances, j.misfire_grace_seconds, j.coalesce) == (1, 300, True)
    assert (j.run_on_start, j.timeout_seconds, j.dry_run, j.input) == (False, None, False, {})
    assert config.base_dir == tmp_path


def test_every_settings_field(tmp_path: Path) -> None:
    settings = {
        "timezone": "Europe/London",
        "max_workers": 3,
        "log_file": "x/y.log",
        "log_format": "json",
        "log_level": "debug",
        "log_keep_days": 7,
        "state_db": "/tmp/abs.db",
        "history_max_age_days": 3,
        "history_max_runs_per_job": 10,
        "shutdown_grace_seconds": 5,
        "api": {"enabled": True, "host": "0.0.0.0", "port": 9000, "api_key": "sekret-key"},
    }
    s = load(tmp_path, {"settings": settings, "jobs": []}).settings
    assert s.timezone == "Europe/London" and s.max_workers == 3
    assert s.log_file == str(tmp_path / "x/y.log") and s.state_db == "/tmp/abs.db"
    assert s.log_level == "DEBUG" and s.log_format == "json"
    assert s.api.api_key is not None and s.api.api_key.get_secret_value() == "sekret-key"
    assert "sekret-key" not in repr(s)


@pytest.mark.parametrize(
    ("auth", "cls"),
    [
        ({"type": "none"}, NoAuth),
        (
            {"type": "session", "login_path": "/login", "username": "u", "password": "p"},
            SessionAuth,
        ),
        ({"type": "bearer", "login_path": "/t", "username": "u", "password": "p"}, BearerAuth),
        ({"type": "api_key", "header": "X-Key", "value": "v"}, ApiKeyAuth),
        ({"type": "basic", "username": "u", "password": "p"}, BasicAuth),
    ],
    ids=["none", "session", "bearer", "api_key", "basic"],
)
def test_auth_types(tmp_path: Path, auth: dict[str, Any], cls: type) -> None:
    env = {"base_url": "https://x.example/", "auth": auth}
    config = load(tmp_path, {"environments": {"live": env}, "jobs": [job()]})
    live = config.environments["live"]
    assert isinstance(live.auth, cls)
    assert live.base_url == "https://x.example"
    assert (live.timeout_seconds, live.retries, live.backoff_seconds) == (30, 5, 1.0)
    assert live.execute.path == "/integrations/{integration_id}/execute"
    assert live.execute.method == "POST"
    if isinstance(live.auth, BearerAuth):
        assert (live.auth.token_field, live.auth.ttl_seconds) == ("token", 7200)


def test_chain_entry_kinds_and_conditions(tmp_path: Path) -> None:
    chain = [
        [
            "a",
            {"id": "b", "input": {"k": 1}, "continue_on_error": True},
            {"http": {"method": "POST", "url": "http://h/x", "json": {"a": 1}}},
            {"function": "mod.sub:fn", "when": {"any": [{"token": "x", "in": [1, 2]}]}},
        ],
        [{"id": "c", "when": [{"token": "items.0.id", "exists": True}, {"token": "n", "gt": 0}]}],
    ]
    config = load(tmp_path, {"jobs": [job(integrationIDs=chain)]})
    first, second = config.jobs[0].integrationIDs
    assert first[0] == "a"
    assert isinstance(first[1], IntegrationEntry) and first[1].continue_on_error
    assert isinstance(first[2], HttpEntry) and first[2].http.json_ == {"a": 1}
    assert isinstance(first[3], FunctionEntry)
    cond = second[0].when  # type: ignore[union-attr]
    assert isinstance(cond, list) and isinstance(cond[0], Condition)
    assert (cond[0].operator, cond[0].operand) == ("exists", True)
    assert (cond[1].operator, cond[1].operand) == ("gt", 0)


@pytest.mark.parametrize("op", OPERATORS)
def test_every_condition_operator_parses(tmp_path: Path, op: str) -> None:
    operand: Any = {"in": [1], "not_in": [1], "exists": True, "matches": "^a"}.get(op, 1)
    entry = {"id": "a", "when": {"token": "t", op: operand}}
    config = load(tmp_path, {"jobs": [job(integrationIDs=[[entry]])]})
    cond = config.jobs[0].integrationIDs[0][0].when  # type: ignore[union-attr]
    assert isinstance(cond, Condition) and cond.operator == op and cond.operand == operand


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"time": ["08:00", "17:30:15"]}, ((8, 0, 0), (17, 30, 15))),
        ({"time": "07:05", "days": ["mon", 4, "Sunday"]}, ((7, 5, 0),)),
    ],
    ids=["time-list", "time-days"],
)
def test_time_schedules(tmp_path: Path, fields: dict[str, Any], expected: Any) -> None:
    data = {"label": "J", "integrationIDs": [["a"]], **fields}
    config = load(tmp_path, {"jobs": [data]})
    schedule = config.schedule(config.jobs[0])
    assert schedule.times == expected
    if "days" in fields:
        assert schedule.days == {0, 4, 6}


@pytest.mark.parametrize(
    ("every", "seconds"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ({"hours": 2, "minutes": 30}, 9000)],
    ids=["s", "m", "h", "d", "object"],
)
def test_every_forms(tmp_path: Path, every: Any, seconds: float) -> None:
    config = load(tmp_path, {"jobs": [job(every=every)]})
    assert config.schedule(config.jobs[0]).every_seconds == seconds


@given(st.integers(min_value=1, max_value=10**7))
def test_duration_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_timezone_precedence(tmp_path: Path) -> None:
    data = {
        "settings": {"timezone": "Europe/London"},
        "jobs": [job(id="a"), job(id="b", timezone="America/New_York")],
    }
    config = load(tmp_path, data)
    assert [config.schedule(j).timezone for j in config.jobs] == [
        "Europe/London",
        "America/New_York",
    ]


def test_interpolation(tmp_path: Path) -> None:
    env = {
        "base_url": "${BASE}",
        "auth": {"type": "basic", "username": "${USER:-anon}", "password": "${PW}"},
        "headers": {"X-Price": "$$5 and ${MISSING:-}x"},
    }
    config = load(
        tmp_path,
        {"environments": {"e": env}, "jobs": [job()]},
        environ={"BASE": "http://h:1", "PW": "s3cret"},
    )
    e = config.environments["e"]
    assert e.base_url == "http://h:1"
    assert isinstance(e.auth, BasicAuth)
    assert (e.auth.username, e.auth.password.get_secret_value()) == ("anon", "s3cret")
    assert e.headers == {"X-Price": "$5 and x"}


def test_unset_variable_is_named(tmp_path: Path) -> None:
    data = {"environments": {"e": {"base_url": "${PLATFORM_URL}"}}, "jobs": [job()]}
    (message,) = problems(tmp_path, data)
    assert "environments.e.base_url" in message
    assert "environment variable PLATFORM_URL is not set" in message
    assert message.startswith("config.json:")


@pytest.mark.parametrize(
    ("fields", "path", "expected"),
    [
        (
            {"time": "25:00", "every": None},
            "jobs[0].time",
            '"25:00" is not valid; expected "HH:MM"',
        ),
        (
            {"blackout_day": [1]},
            "jobs[0].blackout_day",
            'unknown field; did you mean "blackout_days"',
        ),
        ({"every": "10x"}, "jobs[0].every", 'expected a duration like "30s"'),
        ({"every": {"weeks": 1}}, "jobs[0].every", 'expected an object with "days"'),
        ({"every": "0s"}, "jobs[0].every", "greater than zero"),
        (
            {"cron": "0 0 31 2 *", "every": None},
            "jobs[0].cron",
            "not a cron expression that can fire",
        ),
        ({"cron": "0 0 * *", "every": None}, "jobs[0].cron", "expected 5 fields"),
        ({"days": [7]}, "jobs[0].days", "expected a weekday"),
        ({"blackout_days": ["funday"]}, "jobs[0].blackout_days", "expected a weekday"),
        ({"blackout_dates": ["2026-02-30"]}, "jobs[0].blackout_dates[0]", "valid date"),
        ({"timezone": "Mars/Base"}, "jobs[0].timezone", "IANA time zone"),
        ({"max_instances": 0}, "jobs[0].max_instances", "greater than or equal to 1"),
        ({"cron": "* * * * *"}, "jobs[0]", 'exactly one of "time", "every", "cron"'),
        ({"every": None}, "jobs[0]", "found none"),
        ({"integrationIDs": []}, "jobs[0].integrationIDs", "at least 1 item"),
        ({"integrationIDs": [[]]}, "jobs[0].integrationIDs[0]", "at least 1 item"),
        ({"integrationIDs": [[5]]}, "jobs[0].integrationIDs[0][0]", "integration ID string"),
        (
            {"integrationIDs": [[{"id": "a", "when": {"token": "x"}}]]},
            "jobs[0].integrationIDs[0][0].when",
            "exactly one operator",
        ),
        (
            {"integrationIDs": [[{"id": "a", "when": {"token": "x", "gt": 1, "lt": 2}}]]},
            "jobs[0].integrationIDs[0][0].when",
            "exactly one operator",
        ),
        (
            {"integrationIDs": [[{"id": "a", "when": {"token": "x", "matches": "("}}]]},
            "jobs[0].integrationIDs[0][0].when",
            "not a regular expression",
        ),
        (
            {"integrationIDs": [[{"function": "no-colon"}]]},
            "jobs[0].integrationIDs[0][0].function",
            '"module:callable"',
        ),
        (
            {"integrationIDs": [[{"http": {"url": "ftp://x"}}]]},
            "jobs[0].integrationIDs[0][0].http.url",
            "http:// or https://",
        ),
        (
            {"integrationIDs": [[{"http": {}}]]},
            "jobs[0].integrationIDs[0][0].http.url",
            "required field is missing",
        ),
        ({"id": "has space"}, "jobs[0]", "letters, digits"),
        ({"label": None, "id": None}, "jobs[0]", 'expected an "id" or a "label"'),
    ],
    ids=lambda v: v if isinstance(v, str) and "[" in v else None,
)
def test_job_errors(tmp_path: Path, fields: dict[str, Any], path: str, expected: str) -> None:
    data = {k: v for k, v in job(**fields).items() if v is not None}
    found = problems(tmp_path, {"jobs": [data]})
    assert any(f" {path}: " in p and expected in p for p in found), found


@pytest.mark.parametrize(
    ("data", "path", "expected"),
    [
        ({"settings": {"max_worker": 3}}, "settings.max_worker", 'did you mean "max_workers"'),
        ({"settings": {"log_format": "xml"}}, "settings.log_format", "'text' or 'json'"),
        ({"settings": {"log_level": "LOUD"}}, "settings.log_level", "DEBUG, INFO"),
        ({"settings": {"api": {"port": 70000}}}, "settings.api.port", "less than or equal"),
        ({"environments": {"e": {"base_url": "x"}}}, "environments.e.base_url", "http://"),
        (
            {"environments": {"e": {"base_url": "http://x", "auth": {"type": "oauth"}}}},
            "environments.e.auth.type",
            "expected one of 'none', 'session', 'bearer', 'api_key', 'basic'",
        ),
        (
            {"environments": {"e": {"base_url": "http://x", "auth": {"type": "session"}}}},
            "environments.e.auth.login_path",
            "required field is missing",
        ),
        (
            {"environments": {"e": {"base_url": "http://x", "retries": -1}}},
            "environments.e.retries",
            "greater than or equal to 0",
        ),
        ({"job": []}, "job", 'did you mean "jobs"'),
    ],
    ids=[
        "settings-typo",
        "log-format",
        "log-level",
        "port",
        "base-url",
        "auth-type",
        "auth-missing",
        "retries",
        "top-level-typo",
    ],
)
def test_file_level_errors(tmp_path: Path, data: dict[str, Any], path: str, expected: str) -> None:
    found = problems(tmp_path, {"jobs": [], **data})
    assert any(f" {path}: " in p and expected in p for p in found), found


def test_duplicate_ids(tmp_path: Path) -> None:
    (message,) = problems(tmp_path, {"jobs": [job(label="Same"), job(label="same")]})
    assert "jobs[1]: job id 'same' is used twice (also jobs[0])" in message


def test_errors_are_all_listed_with_lines(tmp_path: Path) -> None:
    text = """{
  "jobs": [
    {"label": "a", "time": "25:00", "integrationIDs": [["x"]]},
    {"label": "b", "every": "1m", "integrationID": [["x"]]},
    {"label": "c", "cron": "61 * * * *", "integrationIDs": [["x"]]}
  ]
}"""
    found = problems(tmp_path, text)
    assert found[0].startswith('config.json:3:20: jobs[0].time: "25:00" is not valid')
    assert found[1].startswith("config.json:4:5: jobs[1].integrationIDs: required field")
    assert found[2].startswith(
        "config.json:4:35: jobs[1].integrationID: unknown field; did you mean"
    )
    assert found[3].startswith('config.json:5:20: jobs[2].cron: "61 * * * *" is not valid')
    assert len(found) == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{\n  "jobs": [\n    {"label": "x"\n     "every": "1m"}\n  ]\n}',
            "config.json:3:18: invalid JSON: expected ',' after this value",
        ),
        ('{"jobs": [],}', 'config.json:1:13: invalid JSON: expected a "quoted" key'),
        ('{"jobs": [1,]}', "config.json:1:13: invalid JSON: expected a JSON value"),
        ('{"jobs": "x', "config.json:1:10: invalid JSON: a string is not closed"),
        ("", "config.json: the file is empty"),
        ("  \n", "config.json: the file is empty"),
        ("42", 'config.json:1:1: expected an object {"settings", "environments", "jobs"}'),
    ],
    ids=[
        "missing-comma",
        "trailing-comma-object",
        "trailing-comma-list",
        "unterminated",
        "empty",
        "blank",
        "not-an-object",
    ],
)
def test_invalid_json(tmp_path: Path, text: str, expected: str) -> None:
    (message,) = problems(tmp_path, text)
    assert message.startswith(expected), message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.json: file not found"):
        load_config(tmp_path / "nope.json")


def test_parse_config_does_not_touch_disk(tmp_path: Path) -> None:
    config = parse_config(json.dumps([SEED]), tmp_path / "virtual.json", environ={})
    assert config.base_dir == tmp_path
    assert not (tmp_path / "virtual.json").exists()


def test_config_error_message_counts() -> None:
    with pytest.raises(ConfigError, match=r"invalid config \(3 problems\):\n  a\.json"):
        parse_config('{"jobs": [{"label": "a"}], "x": 1}', Path("a.json"), environ={})


_NAMES = ("A", "B", "DB_URL", "X1")
_LITERAL = st.text(alphabet="ab -:/é{}", max_size=6)


@st.composite
def templates(draw: st.DrawFn) -> tuple[str, dict[str, str], str]:
    """A string mixing literals, ${NAME}, ${NAME:-default} and $$, with its expected value."""
    environ = draw(st.dictionaries(st.sampled_from(_NAMES), _LITERAL))
    text, expected = "", ""
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["literal", "variable", "dollar"]))
        if kind == "literal":
            piece = draw(_LITERAL)
            text, expected = text + piece, expected + piece
        elif kind == "dollar":
            text, expected = text + "$$", expected + "$"
        else:
            name = draw(st.sampled_from(_NAMES))
            if name in environ and draw(st.booleans()):
                text, expected = text + f"${{{name}}}", expected + environ[name]
            else:
                default = draw(_LITERAL.filter(lambda t: "}" not in t))
                text += f"${{{name}:-{default}}}"
                expected += environ.get(name, default)
    return text, environ, expected


@given(templates())
def test_interpolation_forms(case: tuple[str, dict[str, str], str]) -> None:
    text, environ, expected = case
    config = parse_config(
        json.dumps({"jobs": [job(description=text)]}), Path("config.json"), environ=environ
    )
    assert config.jobs[0].description == expected


def test_interpolation_sees_a_dollar_written_as_a_json_escape() -> None:
    text = json.dumps({"jobs": [job(description="${WHO}")]}).replace("$", "\\u0024")
    config = parse_config(text, Path("config.json"), environ={"WHO": "ops"})
    assert config.jobs[0].description == "ops"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("id", "abc\n", "expected ASCII letters"),
        ("time", "06:00\n", 'expected "HH:MM"'),
        ("function", "tasks:run\n", 'expected "module:callable"'),
    ],
)
def test_a_trailing_newline_is_not_part_of_a_valid_value(
    field: str, value: str, message: str
) -> None:
    """Python's `$` matches before a final newline; the schema's patterns do not."""
    job: dict[str, Any] = {"id": "a", "time": "06:00", "integrationIDs": [["x"]]}
    if field == "function":
        job["integrationIDs"] = [[{"function": value}]]
    else:
        job[field] = value
    with pytest.raises(ConfigError, match=message):
        parse_config(json.dumps({"jobs": [job]}), Path("config.json"))


@pytest.mark.parametrize("every", ["99999999999999d", "5000000d", {"days": 1e300}])
def test_an_every_centuries_long_is_a_located_error(every: Any) -> None:
    """Such a grid overflowed datetime arithmetic: a traceback at start, a half-applied reload."""
    job = {"id": "huge", "every": every, "integrationIDs": [["x"]]}
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.every: .*expected at most 3650d"):
        parse_config(json.dumps({"jobs": [job]}), Path("config.json"))
