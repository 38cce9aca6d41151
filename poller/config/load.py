"""Reading config.json: parse, `${NAME}` interpolation, validation, and errors a person can act on.

`load_config` is all-or-nothing: it returns a whole valid Config or raises ConfigError
listing every problem, each with file, line, column and JSON path. It never half-applies.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from poller.config import alerts, chain, environments, kafka, models, sources
from poller.config.jsonpos import Locations, PathKey, line_col
from poller.config.models import Config
from poller.errors import ConfigError, Problem
from poller.jsondepth import MAX_DEPTH, too_deep_at

MAX_CONFIG_CHARS = 64 * 1024 * 1024
"""A config file larger than this is refused (10,000 jobs take about 2 MB)."""
BOM = "\ufeff"
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_ALL_MODELS: tuple[type[BaseModel], ...] = (
    models.Config,
    models.Settings,
    models.ApiSettings,
    environments.Environment,
    environments.Execute,
    environments.NoAuth,
    environments.SessionAuth,
    environments.BearerAuth,
    environments.ApiKeyAuth,
    environments.BasicAuth,
    models.Job,
    chain.Condition,
    chain.AnyOf,
    chain.IntegrationEntry,
    chain.HttpEntry,
    chain.HttpCall,
    chain.FunctionEntry,
    chain.ForEachEntry,
    chain.FilesEntry,
    chain.FilesCall,
    chain.KafkaEntry,
    chain.KafkaCall,
    alerts.WebhookChannel,
    alerts.SmtpChannel,
    alerts.Alerts,
    alerts.ChangeSpec,
    kafka.KafkaSettings,
    kafka.PollingJob,
    sources.DummySource,
    sources.LocalSource,
    sources.SftpSource,
    sources.FtpSource,
    sources.S3Source,
    sources.HttpSource,
)
M = TypeVar("M", bound=BaseModel)
_JSON_HINTS = {
    "Expecting ',' delimiter": "expected ',' between values (is a comma missing here?)",
    "Expecting property name enclosed in double quotes": (
        'expected a "quoted" key (a trailing comma before } is not allowed in JSON)'
    ),
    "Expecting value": "expected a JSON value (a trailing comma before ] is not allowed)",
    "Expecting ':' delimiter": "expected ':' after the key",
    "Extra data": "expected the end of the file after the top-level value",
    "Unterminated string starting at": "a string is not closed with a double quote",
    "Invalid control character at": "a string contains a raw line break or tab; use \\n or \\t",
}


def load_config(
    path: str | Path, environ: Mapping[str, str] | None = None, *, unset_ok: bool = False
) -> Config:
    """Read, interpolate and validate a config file.

    With `unset_ok`, a `${NAME}` whose variable is not set (and has no default) stays as
    its own text, and its problem goes to `Config.unset` instead of failing the load: the
    commands that only read (history, jobs, check) need none of the daemon's secrets.

    Raises:
        ConfigError: with every problem found, when the file cannot be used as it is.
    """
    path = Path(path)
    return parse_config(read_text(path), path, environ, unset_ok=unset_ok)


def read_text(path: Path) -> str:
    """The config file's text; ConfigError naming its absolute path when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path.absolute()), "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([Problem(str(path.absolute()), "", f"cannot be read ({err})")]) from None


def parse_config(
    text: str, path: Path, environ: Mapping[str, str] | None = None, *, unset_ok: bool = False
) -> Config:
    """Validate config text as if it were the file at `path` (relative paths resolve there)."""
    name = path.name
    text = text.removeprefix(BOM)  # Windows editors start UTF-8 files with one
    raw = parse_json(text, name)
    positions = Locations(text)
    problems: list[Problem] = []
    written = copy.deepcopy(raw)  # as written: what a run request carries (`${…}` and all)
    if _may_interpolate(text):
        raw = _interpolate(
            raw, (), os.environ if environ is None else environ, name, positions, problems
        )
    if isinstance(raw, list):
        raw = {"jobs": raw}
    if not isinstance(raw, dict):
        raise ConfigError(
            [
                Problem(
                    name,
                    "",
                    'expected an object {"settings", "environments", "jobs"} or a list of jobs',
                    1,
                    1,
                )
            ]
        )
    raw.pop("$schema", None)
    unset = tuple(problems)
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        # A value whose ${NAME} could not be filled in is already reported; its
        # follow-on validation error would only repeat it.
        unfilled = {p.path for p in problems}
        found = _problems_from(err, raw, name, positions) + _schedule_problems(raw, name, positions)
        seen = {(p.path, p.expected) for p in problems}
        for problem in found:
            if problem.path not in unfilled and (problem.path, problem.expected) not in seen:
                seen.add((problem.path, problem.expected))
                problems.append(problem)
        raise ConfigError(sorted(problems, key=by_place)) from None
    problems.extend(_cross_checks(config, name, positions))
    if problems and not (unset_ok and problems == list(unset)):
        raise ConfigError(sorted(problems, key=by_place))
    # The folder the config is named in, not where a symlink leads (a ConfigMap version).
    config = _resolve_paths(config, path.absolute().parent, unset)
    if isinstance(written, list):
        written = {"jobs": written}
    config.set_written(written.get("jobs", []), written.get("environments", {}))
    return config


def parse_document(
    text: str,
    name: str,
    model: type[M],
    environ: Mapping[str, str],
    *,
    fill_only: str | None = None,
) -> M:
    """Another JSON document read as config.json is (a polling job from Kafka): `${NAME}`
    filled in from `environ` (only under the top-level key `fill_only`, when given), then
    validated against `model`.

    Raises:
        ConfigError: every problem at once, each located in `text` and named `name`.
    """
    raw = parse_json(text, name)
    positions = Locations(text)
    problems: list[Problem] = []
    if _may_interpolate(text):
        if fill_only is None:
            raw = _interpolate(raw, (), environ, name, positions, problems)
        elif isinstance(raw, dict) and fill_only in raw:
            raw[fill_only] = _interpolate(
                raw[fill_only], (fill_only,), environ, name, positions, problems
            )
    try:
        value = model.model_validate(raw)
    except ValidationError as err:
        unfilled = {p.path for p in problems}
        found = _problems_from(err, raw, name, positions)
        problems.extend(p for p in found if p.path not in unfilled)
    if problems:
        raise ConfigError(sorted(problems, key=by_place))
    return value


def load_settings(path: Path) -> models.Settings:
    """Only the settings of a config file (paths resolved), for reading the history while
    the rest of the file is being edited; an unset ${NAME} stays as its own text.

    Raises:
        ConfigError: the file, or its settings, cannot be used.
    """
    text = read_text(path)
    raw = parse_json(text, path.name)
    positions = Locations(text)
    only = {"settings": raw.get("settings", {}) if isinstance(raw, dict) else {}}
    if _may_interpolate(text):
        only = _interpolate(only, (), os.environ, path.name, positions, [])
    try:
        settings = Config.model_validate(only).settings
    except ValidationError as err:
        raise ConfigError(_problems_from(err, only, path.name, positions)) from None
    return _resolve_settings(settings, path.absolute().parent)


def config_warnings(config: Config) -> list[str]:
    """Things that are valid but will fail at run time (e.g. an undefined environment)."""
    warnings = []
    for job in config.jobs:
        uses_platform = any(
            isinstance(entry, (str, chain.IntegrationEntry))
            for entry in chain.leaf_entries(job.integrationIDs)
        )
        env = config.environment_name(job)
        if uses_platform and env not in config.environments and not job.dry_run:
            warnings.append(
                f'job {job.id}: environment {env!r} is not defined in "environments"; '
                "its integration calls will fail"
            )
    return warnings


def parse_json(text: str, name: str) -> Any:
    """The file's JSON; ConfigError (located) when it is empty, huge, too deep or not JSON."""
    if not text.strip():
        raise ConfigError(
            [Problem(name, "", 'the file is empty; expected a JSON object {"jobs": [...]}')]
        )
    if len(text) > MAX_CONFIG_CHARS:
        expected = f"the file is {len(text):,} characters; expected at most {MAX_CONFIG_CHARS:,}"
        raise ConfigError([Problem(name, "", expected)])
    deep = too_deep_at(text)
    if deep is not None:
        starts = [0] + [m.end() for m in re.finditer("\n", text[:deep])]
        line, column = line_col(starts, deep)
        expected = f"nested more than {MAX_DEPTH} levels deep (objects and lists inside each other)"
        raise ConfigError([Problem(name, "", expected, line, column)])
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        expected = next(
            (hint for key, hint in _JSON_HINTS.items() if err.msg.startswith(key)), err.msg
        )
        line, column = err.lineno, err.colno
        if err.msg.startswith("Expecting ',' delimiter"):
            # The decoder stops at the next value; the comma belongs after the previous one.
            before = text[: err.pos].rstrip()
            starts = [0] + [m.end() for m in re.finditer("\n", before)]
            line, column = line_col(starts, max(len(before) - 1, 0))
            column += 1
            expected = (
                f"expected ',' after this value (a comma is missing before line {err.lineno})"
            )
        raise ConfigError([Problem(name, "", f"invalid JSON: {expected}", line, column)]) from None


def variable_values(raw: Any, environ: Mapping[str, str]) -> list[str]:
    """The values of every set `${NAME}` the parsed file names, to mask them in output."""
    if isinstance(raw, dict):
        return [v for item in raw.values() for v in variable_values(item, environ)]
    if isinstance(raw, list):
        return [v for item in raw for v in variable_values(item, environ)]
    if isinstance(raw, str) and "${" in raw:
        names = (match.group(1) for match in _VAR.finditer(raw))
        return [environ[name] for name in names if name and environ.get(name)]
    return []


def _may_interpolate(text: str) -> bool:
    """False when no value can hold a ${NAME} or $$: the walk of every value is skipped."""
    return "${" in text or "$$" in text or "\\u0024" in text.lower()


def _interpolate(
    value: Any,
    path: PathKey,
    environ: Mapping[str, str],
    name: str,
    positions: Locations,
    problems: list[Problem],
) -> Any:
    # In place: the tree is json.loads' fresh output, and a copy of a 10,000-job file
    # would cost time and memory for the few strings that hold a ${NAME}.
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) or (isinstance(item, str) and "$" in item):
                value[key] = _interpolate(item, (*path, key), environ, name, positions, problems)
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)) or (isinstance(item, str) and "$" in item):
                value[i] = _interpolate(item, (*path, i), environ, name, positions, problems)
        return value
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        var, default = match.group(1), match.group(2)
        if var in environ:
            return environ[var]
        if default is not None:
            return default
        line, column = positions.find(path)
        problems.append(
            Problem(
                name,
                render_path(path),
                f"environment variable {var} is not set; set it, or write "
                f"${{{var}:-default}} to give a default",
                line,
                column,
            )
        )
        return match.group(0)

    return _VAR.sub(replace, value)


def by_place(problem: Problem) -> tuple[int, int]:
    """Sort key: problems in the order of the file."""
    return problem.line or 0, problem.column or 0


def render_path(path: PathKey) -> str:
    """("jobs", 2, "time") -> "jobs[2].time"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems_from(
    err: ValidationError, raw: Any, name: str, positions: Locations
) -> list[Problem]:
    merged: dict[PathKey, Problem] = {}
    for error in err.errors():
        kind = error["type"]
        path, node = _data_path(error["loc"], raw, keep_last=kind in ("missing", "extra_forbidden"))
        if kind == "extra_forbidden":
            expected = "unknown field" + _suggest(str(path[-1]), node)
            problem = Problem(name, render_path(path), expected, *positions.find(path))
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            if kind == "missing":
                message = "required field is missing"
            elif kind == "union_tag_invalid":
                path = (*path, str(error.get("ctx", {}).get("discriminator", "")).strip("'"))
                tags = error.get("ctx", {}).get("expected_tags", "")
                message = f"expected one of {tags}"
                error = {**error, "input": error.get("ctx", {}).get("tag")}
            elif kind.endswith("_type") or kind in ("literal_error", "union_tag_invalid"):
                message = "expected " + message.lower().removeprefix("input should be ")
            # A whole object's error (a job's schedule) names what it found; the object
            # itself would bury the message.
            has_value = kind != "missing" and not isinstance(error.get("input"), dict)
            problem = Problem(
                name,
                render_path(path),
                message,
                *positions.find(path),
                value=error.get("input"),
                has_value=has_value,
            )
        if path in merged and kind != "extra_forbidden":
            old = merged[path]
            if problem.expected not in old.expected:
                merged[path] = Problem(
                    old.file,
                    old.path,
                    f"{old.expected}, or {problem.expected}",
                    old.line,
                    old.column,
                    old.value,
                    old.has_value,
                )
        else:
            merged[path] = problem
    return list(merged.values())


def _data_path(loc: tuple[int | str, ...], raw: Any, keep_last: bool) -> tuple[PathKey, Any]:
    """Drop union tags from a pydantic loc, keeping only keys that exist in the data
    (and, with `keep_last`, the final key: the missing or unknown field).

    Returns the path and the parent object of its last element.
    """
    path: list[str | int] = []
    node, parent = raw, raw
    for i, part in enumerate(loc):
        is_last = i == len(loc) - 1
        if _has(node, part):
            parent, node = node, node[part]
            path.append(part)
        elif is_last and keep_last:
            parent = node
            path.append(part)
    return tuple(path), parent


def _has(node: Any, part: int | str) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and part < len(node)


def _suggest(key: str, siblings: Any) -> str:
    known = [str(k) for k in siblings] if isinstance(siblings, dict) else []
    if "token" in known:  # a condition: an unknown key is meant as its operator
        operator = chain.operator_for(key)
        hint = f'did you mean "{operator}"? ' if operator else ""
        return f"; {hint}expected one operator of {', '.join(chain.OPERATORS)}"
    candidates: set[str] = set()
    for model in _ALL_MODELS:
        names = {info.alias or field for field, info in model.model_fields.items()}
        if all(k in names or k == key for k in known if k in _all_names()):
            candidates |= names
    matches = difflib.get_close_matches(key, sorted(candidates or _all_names()), n=1, cutoff=0.7)
    return f'; did you mean "{matches[0]}"?' if matches else ""


def _all_names() -> set[str]:
    return {
        info.alias or field for model in _ALL_MODELS for field, info in model.model_fields.items()
    }


def _schedule_problems(raw: dict[str, Any], name: str, positions: Locations) -> list[Problem]:
    """Each job's schedule problem, also of jobs that fail other checks (pydantic checks a
    whole job only once its fields are valid, which would show one problem per attempt)."""
    jobs = raw.get("jobs")
    problems = []
    for index, job in enumerate(jobs if isinstance(jobs, list) else []):
        error = models.schedule_shape_error(job) if isinstance(job, dict) else None
        if error:
            path: PathKey = ("jobs", index)
            problems.append(Problem(name, render_path(path), error, *positions.find(path)))
    return problems


def _cross_checks(config: Config, name: str, positions: Locations) -> list[Problem]:
    problems = []
    seen: dict[str, int] = {}
    for index, job in enumerate(config.jobs):
        if job.id in seen:
            path: PathKey = ("jobs", index)
            problems.append(
                Problem(
                    name,
                    render_path(path),
                    f"job id {job.id!r} is used twice (also jobs[{seen[job.id]}]); "
                    'expected unique ids: set "id" or a different "label"',
                    *positions.find(path),
                )
            )
        seen.setdefault(job.id, index)
    problems.extend(_alert_problems(config, name, positions))
    return problems


def _alert_problems(config: Config, name: str, positions: Locations) -> list[Problem]:
    """Alerts naming a channel settings.alerts does not define, and daemon alerts of a job."""
    channels = config.settings.alerts
    known = ", ".join(sorted(channels)) or 'none; define them in "settings.alerts"'
    wanted: list[tuple[PathKey, alerts.Alerts | None]] = [
        (("settings", "default_alerts"), config.settings.default_alerts),
        *((("jobs", index, "alerts"), job.alerts) for index, job in enumerate(config.jobs)),
    ]
    problems = []
    for where, chosen in wanted:
        if chosen is None:
            continue
        for position, channel in enumerate(chosen.channels):
            if channel not in channels:
                path = (*where, "channels", position)
                reason = f"no alert channel {channel!r}; expected one of {known}"
                problems.append(Problem(name, render_path(path), reason, *positions.find(path)))
        if where[0] == "jobs" and "daemon" in chosen.on:
            path = (*where, "on", chosen.on.index("daemon"))
            reason = (
                'daemon alerts are about Poller itself: list "daemon" in settings.default_alerts'
            )
            problems.append(Problem(name, render_path(path), reason, *positions.find(path)))
    return problems


def _resolve_paths(config: Config, base_dir: Path, unset: tuple[Problem, ...]) -> Config:
    resolved = config.model_copy(update={"settings": _resolve_settings(config.settings, base_dir)})
    resolved.set_base_dir(base_dir)
    resolved.set_unset(unset)
    return resolved


def _resolve_settings(settings: models.Settings, base_dir: Path) -> models.Settings:
    return settings.model_copy(
        update={
            "log_file": str(base_dir / settings.log_file),
            "state_db": settings.state_db
            if settings.is_shared_store
            else str(base_dir / settings.state_db),
        }
    )
