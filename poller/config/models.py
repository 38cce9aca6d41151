"""Pydantic models of config.json: what every field means, its default and what is allowed.

They only describe and validate; reading the file, `${NAME}` interpolation and error
locations live in `poller.config.load`. Models are frozen: a loaded config never changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from poller.config.alerts import Alerts, ChangeSpec, Channel, check_http_url
from poller.config.base import Model
from poller.config.chain import Entry, FilesEntry, HttpEntry, calls_at_once, leaf_entries
from poller.config.constraints import (
    CRON_PATTERN,
    DURATION_PATTERN,
    HTTP_URL_PATTERN,
    INTERVAL_OBJECT,
    JOB_IDENTITY,
    JOB_SCHEDULE,
    WEEKDAY_NUMBER,
    text_matching,
)
from poller.config.environments import PUBLIC_HEADERS, BasicAuth, Environment, basic_credentials
from poller.config.kafka import ExecutorSettings, KafkaSettings, LocalExecutorSettings
from poller.config.sources import secret_values as source_secrets
from poller.errors import Problem
from poller.redaction import mask_url
from poller.timeformat import CLOCK_RE, parse_clock, parse_duration

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
IPV6_HOST_RE = re.compile(r"^\[[0-9A-Fa-f:.]{2,45}\]$")
URL_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
STORE_URL_SCHEMES = ("postgresql", "postgres")
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# --- settings -------------------------------------------------------------------------


def check_timezone(name: str | None) -> str | None:
    """Validate an IANA zone name (None means the machine's zone)."""
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            'expected an IANA time zone name such as "Europe/London" or "UTC"'
        ) from None
    return name


class ApiSettings(Model):
    enabled: bool = Field(False, description="Serve the status API and page.")
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    api_key: SecretStr | None = Field(
        None,
        description='Key asked of every data and action request, as X-API-Key or "Authorization: '
        'Bearer"; use "${POLLER_API_KEY}". Without one the daemon generates one.',
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names served besides loopback's (a reverse proxy's), without port.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            labels = host.removesuffix(".").split(".")
            if not IPV6_HOST_RE.fullmatch(host) and not all(map(HOST_LABEL_RE.fullmatch, labels)):
                raise ValueError(
                    f'{host!r}: expected a host name such as "poller.example.com" (no scheme, '
                    "no port, no path)"
                )
        return [host.lower() for host in value]


class Settings(Model):
    timezone: str | None = Field(
        None, description="IANA zone for job times (default: the machine's zone)."
    )
    max_workers: int = Field(8, ge=1, le=1024, description="Runs at once.")
    log_file: str = Field("logs/logfile.log", description="Log file, relative to the config.")
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    log_keep_days: int = Field(14, ge=1, description="Rotated daily log files kept.")
    state_db: str = Field(
        "data/poller.db",
        description="The SQLite file (relative path ok), or a postgresql:// URL shared by "
        "several daemons (credentials through ${NAME}).",
    )
    daemon_lease_seconds: float = Field(
        30,
        ge=3,
        description="With PostgreSQL: a daemon silent this long is taken for dead and its "
        "running runs are marked interrupted.",
    )
    durability: Literal["normal", "full"] = Field(
        "normal",
        description='"full" makes every commit wait for the disk, so a power loss undoes none.',
    )
    history_max_age_days: int = Field(30, ge=1, description="Runs older than this are pruned.")
    history_max_runs_per_job: int = Field(1000, ge=1, description="Newest runs kept per job.")
    shutdown_grace_seconds: float = Field(
        25.0, ge=0, description="On SIGTERM, how long runs in progress may finish."
    )
    api: ApiSettings = Field(default_factory=ApiSettings)
    alerts: dict[str, Channel] = Field(
        default_factory=dict, description="Alert channels by name: webhook or smtp."
    )
    default_alerts: Alerts | None = Field(
        None, description="Alerts of jobs without their own, and the daemon's own."
    )
    alert_window_seconds: float = Field(
        300, ge=0, description="At most one alert per job and kind in this window."
    )
    public_url: str | None = Field(
        None,
        description="Where people reach the page, for links in alerts (default: the API's).",
        json_schema_extra=text_matching(HTTP_URL_PATTERN),
    )
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings,
        description="Kafka for `app.py worker` and the `kafka` commands (SPEC §10).",
    )
    executor: ExecutorSettings = Field(
        default_factory=LocalExecutorSettings,
        description='Where runs run: {"type": "local"} (this process\'s worker pool) or '
        '{"type": "kafka", …} (`app.py worker` processes, over settings.kafka; SPEC §11).',
    )

    _tz = field_validator("timezone")(classmethod(lambda cls, v: check_timezone(v)))

    @field_validator("state_db")
    @classmethod
    def _state_db(cls, value: str) -> str:
        scheme = URL_SCHEME_RE.match(value)
        if scheme and scheme.group(1).lower() not in STORE_URL_SCHEMES:
            raise ValueError(
                f"a {scheme.group(1)}:// URL is not a state store Poller supports; expected "
                "the path of a SQLite file, such as data/poller.db, or a postgresql:// URL"
            )
        if scheme:
            try:
                urlsplit(value).port  # noqa: B018 - a port that is not a number raises
            except ValueError as err:
                raise ValueError(f"not a valid PostgreSQL URL ({err})") from None
        return value

    @model_validator(mode="after")
    def _shared_store_needs_a_zone(self) -> Settings:
        if self.is_shared_store and self.timezone is None:
            raise ValueError(
                "timezone is required when state_db is a postgresql:// URL: "
                "daemons on several machines must compute the same fire times, and the "
                'machines\' own zones may differ; set it, e.g. "Europe/Amsterdam" or "UTC"'
            )
        if self.executor.type == "kafka" and self.timezone is None:
            raise ValueError(
                'timezone is required when executor.type is "kafka": workers on other '
                "machines judge blackout days in this zone, and the machines' own zones may "
                'differ; set it, e.g. "Europe/Amsterdam" or "UTC"'
            )
        return self

    @property
    def is_shared_store(self) -> bool:
        """Whether state_db names a PostgreSQL database (several daemons may share it)."""
        return URL_SCHEME_RE.match(self.state_db) is not None

    @property
    def state_where(self) -> str:
        """state_db as messages may show it: a URL without its password."""
        return mask_url(self.state_db) if self.is_shared_store else self.state_db

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value).rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError("expected one of " + ", ".join(LOG_LEVELS))
        return value.upper()


# --- jobs -----------------------------------------------------------------------------


def parse_weekday(value: int | str) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a weekday")
    if isinstance(value, int):
        if 0 <= value <= 6:
            return value
    elif isinstance(value, str) and value.strip().lower()[:3] in WEEKDAY_NAMES:
        return WEEKDAY_NAMES.index(value.strip().lower()[:3])
    raise ValueError('expected a weekday: 0=Monday … 6=Sunday, or "mon" … "sun"')


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "job"


SCHEDULE_FIELDS = ("time", "every", "cron")
WEEKDAY_PATTERN = r"^\s*(?:{})".format(
    "|".join("".join(f"[{c}{c.upper()}]" for c in name) for name in WEEKDAY_NAMES)
)
"""What parse_weekday takes as text: a name's first three letters, in any case."""

# The types of the fields, with what their validators accept said in JSON Schema.
Clock = Annotated[str, Field(json_schema_extra=text_matching(CLOCK_RE.pattern))]
Weekday = (
    Annotated[int, Field(json_schema_extra=WEEKDAY_NUMBER)]
    | Annotated[str, Field(json_schema_extra=text_matching(WEEKDAY_PATTERN))]
)
Interval = (
    Annotated[str, Field(json_schema_extra=text_matching(DURATION_PATTERN))]
    | Annotated[dict[str, float], Field(json_schema_extra=INTERVAL_OBJECT)]
)
Clocks = Annotated[list[Clock], Field(json_schema_extra={"minItems": 1})]
CronText = Annotated[str, Field(json_schema_extra=text_matching(CRON_PATTERN))]


def schedule_shape_error(job: Mapping[str, Any]) -> str | None:
    """What is wrong with how a job says when it fires, or None; `job` is its JSON object
    (the loader asks it of a job that failed other checks too, to list every problem)."""
    kinds = [k for k in SCHEDULE_FIELDS if job.get(k) is not None]
    if len(kinds) != 1:
        found = " and ".join(f'"{k}"' for k in kinds) if kinds else "none"
        return f'expected exactly one of "time", "every", "cron" (found {found})'
    if job.get("days") is not None and job.get("cron") is not None:
        return '"days" does not combine with "cron"; use its weekday field'
    return None


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a job fires, normalised: exactly one of times, every_seconds or cron is set."""

    timezone: str | None
    times: tuple[tuple[int, int, int], ...] = ()
    days: frozenset[int] | None = None
    every_seconds: float | None = None
    cron: str | None = None


class Job(Model):
    model_config = ConfigDict(json_schema_extra={**JOB_SCHEDULE, **JOB_IDENTITY})

    id: str = Field(
        "",
        description="Stable identity (default: slug of label); unique.",
        json_schema_extra=text_matching(f"^$|{JOB_ID_RE.pattern}"),
    )
    label: str = Field("", description="Human name.")
    description: str = Field("", description="Free text for people.")
    enabled: bool = True
    time: Clock | Clocks | None = Field(
        None, description='Daily at "HH:MM" or "HH:MM:SS" (or a list of them).'
    )
    days: list[Weekday] | None = Field(
        None, description='Only on these weekdays: 0=Monday … 6=Sunday, or "mon"…"sun".'
    )
    every: Interval | None = Field(
        None, description='Interval: "30s", "10m", "2h", "1d" or {"hours": 2}.'
    )
    cron: CronText | None = Field(
        None, description='5-field cron expression, e.g. "0 8-18 * * 1-5".'
    )
    timezone: str | None = Field(None, description="IANA zone; overrides settings.timezone.")
    blackout_days: list[Weekday] = Field(
        default_factory=list, description="Weekdays on which the job is skipped."
    )
    blackout_dates: list[date] = Field(
        default_factory=list, description='"YYYY-MM-DD" dates on which the job is skipped.'
    )
    environment: str | None = Field(
        None, description="Environment of its integration steps (default: the only one, or live)."
    )
    integrationIDs: list[Annotated[list[Entry], Field(min_length=1)]] = Field(
        min_length=1, description="The chain: a list of steps, each a list of entries."
    )
    input: dict[str, Any] = Field(default_factory=dict, description="Input of the first step.")
    max_instances: int = Field(1, ge=1, description="Concurrent runs allowed.")
    misfire_grace_seconds: float = Field(300, ge=0, description="How late a fire may start.")
    coalesce: bool = Field(True, description="After downtime run missed fires once, not each.")
    run_on_start: bool = Field(False, description="Also run once when the daemon starts.")
    timeout_seconds: float | None = Field(None, gt=0, description="Whole-run limit.")
    dry_run: bool = Field(False, description="Send nothing; log the calls instead.")
    detect_changes: bool | ChangeSpec = Field(
        False, description="Compare each output with the last successful run's."
    )
    alerts: Alerts | None = Field(
        None, description="Which alerts this job sends (default: settings.default_alerts)."
    )
    ping_url: SecretStr | None = Field(
        None,
        description="Called on start (URL/start), success (URL) and failure (URL/fail); secret.",
        json_schema_extra=text_matching(HTTP_URL_PATTERN),
    )

    _tz = field_validator("timezone")(classmethod(lambda cls, v: check_timezone(v)))

    @field_validator("ping_url")
    @classmethod
    def _ping_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_http_url(value.get_secret_value())
        return value

    @field_validator("time")
    @classmethod
    def _times(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in [value] if isinstance(value, str) else value or []:
            parse_clock(item)
        if isinstance(value, list) and not value:
            raise ValueError('expected at least one "HH:MM"')
        return value

    @field_validator("days", "blackout_days")
    @classmethod
    def _weekdays(cls, value: list[int | str] | None) -> list[int | str] | None:
        for item in value or []:
            parse_weekday(item)
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str | dict[str, float] | None) -> str | dict[str, float] | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value.split()) != 5:
            raise ValueError('expected 5 fields "minute hour day month weekday"')
        try:
            next(CronSim(value, datetime(2000, 1, 1)))
        except CronSimError as err:
            raise ValueError(f"not a cron expression that can fire ({err})") from None
        except StopIteration:
            raise ValueError("a cron expression that never fires") from None
        return value

    @model_validator(mode="after")
    def _kind_and_identity(self) -> Job:
        shape = schedule_shape_error({k: getattr(self, k) for k in (*SCHEDULE_FIELDS, "days")})
        if shape:
            raise ValueError(shape)
        if not self.id and not self.label:
            raise ValueError('expected an "id" or a "label"')
        if not self.id:
            object.__setattr__(self, "id", slugify(self.label))
        if not self.label:
            object.__setattr__(self, "label", self.id)
        if not JOB_ID_RE.fullmatch(self.id):
            raise ValueError(
                f"id {self.id!r}: expected ASCII letters, digits, '_', '-' and '.' only"
            )
        return self

    def schedule(self, default_timezone: str | None = None) -> Schedule:
        """This job's schedule; `default_timezone` is settings.timezone (None: the machine's)."""
        times: tuple[tuple[int, int, int], ...] = ()
        if self.time is not None:
            raw = [self.time] if isinstance(self.time, str) else self.time
            times = tuple(sorted({parse_clock(t) for t in raw}))
        return Schedule(
            timezone=self.timezone or default_timezone,
            times=times,
            days=frozenset(parse_weekday(d) for d in self.days) if self.days else None,
            every_seconds=parse_duration(self.every) if self.every is not None else None,
            cron=self.cron,
        )

    @property
    def blackout_weekdays(self) -> frozenset[int]:
        return frozenset(parse_weekday(d) for d in self.blackout_days)


# --- the whole file -------------------------------------------------------------------


class Config(Model):
    settings: Settings = Field(default_factory=Settings)
    environments: dict[str, Environment] = Field(default_factory=dict)
    jobs: list[Job] = Field(default_factory=list)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _job_map: dict[str, Job] | None = PrivateAttr(default=None)
    _unset: tuple[Problem, ...] = PrivateAttr(default=())
    _written_jobs: dict[str, Any] = PrivateAttr(default_factory=dict)
    _written_environments: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """The config file's folder: relative paths and `function` modules resolve here."""
        return self._base_dir

    def set_base_dir(self, base_dir: Path) -> None:
        self._base_dir = base_dir

    @property
    def unset(self) -> tuple[Problem, ...]:
        """The `${NAME}`s left as text because their variable is not set (a load with
        `unset_ok`: a command that needs no secrets); empty for a config that can run."""
        return self._unset

    def set_unset(self, problems: tuple[Problem, ...]) -> None:
        self._unset = problems

    def set_written(self, jobs: list[Any], environments: dict[str, Any]) -> None:
        """Keep the file's jobs (in the file's order) and environments as written."""
        self._written_jobs = {
            job.id: written
            for job, written in zip(self.jobs, jobs, strict=False)
            if isinstance(written, dict)
        }
        self._written_environments = environments if isinstance(environments, dict) else {}

    def written(self, job: Job) -> tuple[dict[str, Any], dict[str, Any]]:
        """The job and the environment it uses as the file has them, `${NAME}`s not filled
        in (a run request to Kafka workers, which fill them from their own environment):
        (job, {name: environment}). A config built in code has only its parsed form."""
        written_job = self._written_jobs.get(job.id)
        if written_job is None:
            written_job = job.model_dump(mode="json", exclude_unset=True)
        name = self.environment_name(job)
        environment = self._written_environments.get(name)
        if not isinstance(environment, dict) and name in self.environments:
            environment = self.environments[name].model_dump(mode="json", exclude_unset=True)
        return written_job, {} if environment is None else {name: environment}

    @property
    def job_map(self) -> dict[str, Job]:
        """Jobs by id (do not modify)."""
        if self._job_map is None:
            self._job_map = {job.id: job for job in self.jobs}
        return self._job_map

    def schedule(self, job: Job) -> Schedule:
        """A job's schedule, with settings.timezone as its default zone."""
        return job.schedule(self.settings.timezone)

    def secret_values(self) -> list[str]:
        """Every secret the config holds or implies, for poller.redaction: the API key, auth
        passwords and keys with the Basic header they make, environment header values (but
        for plainly public ones such as Accept), and in `http` entries the values of
        secret-named headers and query parameters and a URL's password."""
        secrets = [self.settings.api.api_key] if self.settings.api.api_key else []
        values: list[str] = []
        for channel in self.settings.alerts.values():
            values.extend(channel.secret_values())
        values.extend(self.settings.kafka.secret_values())
        if self.settings.is_shared_store:
            values.append(urlsplit(self.settings.state_db).password or "")
        for environment in self.environments.values():
            auth = environment.auth
            for name in ("password", "value"):
                value = getattr(auth, name, None)
                if isinstance(value, SecretStr):
                    secrets.append(value)
            if isinstance(auth, BasicAuth):
                values.extend(basic_credentials(auth.username, auth.password.get_secret_value()))
            values.extend(
                value
                for name, value in environment.headers.items()
                if name.lower() not in PUBLIC_HEADERS
            )
            values.append(urlsplit(environment.base_url).password or "")
        for job in self.jobs:
            if job.ping_url is not None:
                secrets.append(job.ping_url)
            for entry in leaf_entries(job.integrationIDs):
                if isinstance(entry, HttpEntry):
                    values.extend(entry.http.secret_values())
                elif isinstance(entry, FilesEntry):
                    values.extend(source_secrets(entry.files.source_config))
        return [secret.get_secret_value() for secret in secrets] + [v for v in values if v]

    def calls_at_once(self) -> int:
        """The most platform calls this config's runs may make at once."""
        most = max((calls_at_once(job.integrationIDs) for job in self.jobs), default=1)
        return self.settings.max_workers * most

    def alerts_of(self, job: Job) -> Alerts | None:
        """The alerts a job sends: its own, else settings.default_alerts."""
        return job.alerts or self.settings.default_alerts

    def environment_name(self, job: Job) -> str:
        """The environment a job's integration steps use (SPEC §3 default rule)."""
        if job.environment:
            return job.environment
        if len(self.environments) == 1:
            return next(iter(self.environments))
        return "live"
