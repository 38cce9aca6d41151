"""Pydantic models of monitoring (SPEC §9): alert channels, which alerts a job sends, and
what its change detection compares. They only describe and validate; sending is
poller.alerts' work and comparing poller.run.changes'.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, SecretStr, Tag, field_validator, model_validator

from poller.config.base import Model, is_loopback
from poller.config.constraints import HTTP_URL_PATTERN, text_matching
from poller.config.environments import PUBLIC_HEADERS

AlertKind = Literal["failure", "recovery", "change", "misfire", "daemon"]
JOB_ALERT_KINDS: tuple[AlertKind, ...] = ("failure", "recovery", "change", "misfire")
ALERT_KINDS: tuple[AlertKind, ...] = (*JOB_ALERT_KINDS, "daemon")
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def check_http_url(value: str) -> str:
    if not re.match(HTTP_URL_PATTERN, value):
        raise ValueError("expected an http:// or https:// URL")
    return value


class WebhookChannel(Model):
    type: Literal["webhook"]
    url: str = Field(
        description="Where alerts are POSTed as JSON (a Slack incoming webhook works as it is); "
        "it is treated as a secret.",
        json_schema_extra=text_matching(HTTP_URL_PATTERN),
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every alert.")
    timeout_seconds: float = Field(10, gt=0, le=300, description="Per delivery attempt.")

    _url = field_validator("url")(classmethod(lambda cls, v: check_http_url(v)))

    def secret_values(self) -> list[str]:
        return [self.url, *(v for k, v in self.headers.items() if k.lower() not in PUBLIC_HEADERS)]


class SmtpChannel(Model):
    type: Literal["smtp"]
    host: str = Field(min_length=1, description="SMTP server.")
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = Field(True, description="Upgrade to TLS (verified) before anything is sent.")
    username: str | None = None
    password: SecretStr | None = Field(None, description='Use "${SMTP_PASSWORD}".')
    from_: str = Field(alias="from", json_schema_extra=text_matching(EMAIL_RE.pattern))
    to: list[Annotated[str, Field(json_schema_extra=text_matching(EMAIL_RE.pattern))]] = Field(
        min_length=1
    )
    timeout_seconds: float = Field(10, gt=0, le=300, description="Per delivery attempt.")

    @field_validator("from_")
    @classmethod
    def _sender(cls, value: str) -> str:
        if not EMAIL_RE.fullmatch(value):
            raise ValueError('expected an address such as "poller@example.com"')
        return value

    @field_validator("to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        for address in value:
            if not EMAIL_RE.fullmatch(address):
                raise ValueError(f'{address!r}: expected an address such as "ops@example.com"')
        return value

    @model_validator(mode="after")
    def _credentials(self) -> SmtpChannel:
        if (self.username is None) != (self.password is None):
            raise ValueError('expected both "username" and "password", or neither')
        if self.password is not None and not self.starttls and not is_loopback(self.host):
            raise ValueError(
                'a password is never sent in clear to another machine: set "starttls": true'
            )
        return self

    def secret_values(self) -> list[str]:
        return [self.password.get_secret_value()] if self.password else []


def _channel_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("webhook", "smtp") else None


Channel = Annotated[
    Annotated[WebhookChannel, Tag("webhook")] | Annotated[SmtpChannel, Tag("smtp")],
    Discriminator(
        _channel_kind,
        custom_error_type="channel",
        custom_error_message='expected a channel with "type": "webhook" or "type": "smtp"',
    ),
]


class Alerts(Model):
    on: list[AlertKind] = Field(
        default_factory=lambda: list(JOB_ALERT_KINDS),
        description="Which alerts: failure, recovery, change, misfire (and daemon, in "
        "settings.default_alerts only).",
    )
    channels: list[str] = Field(min_length=1, description="Names of settings.alerts channels.")


class ChangeSpec(Model):
    paths: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Dotted paths compared (default: the whole output)."
    )
    ignore: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description='Dotted paths left out of the comparison ("*" matches any key or index).',
    )
