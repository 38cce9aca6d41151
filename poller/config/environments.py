"""Models of config.json's environments: a platform's base URL, its auth (none, session,
bearer, api key, basic), headers, timeouts and retries; and what of them is secret."""

from __future__ import annotations

import base64
import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from poller.config.base import Model
from poller.config.chain import MAX_RESPONSE_BYTES

PUBLIC_HEADERS = frozenset(
    {"accept", "accept-encoding", "accept-language", "cache-control", "content-type", "user-agent"}
)
"""Environment headers whose values are not taken for secrets (every other one's is)."""


class NoAuth(Model):
    type: Literal["none"]


class SessionAuth(Model):
    type: Literal["session"]
    login_path: str = Field(description="Path POSTed with username and password.")
    username: str
    password: SecretStr


class BearerAuth(Model):
    type: Literal["bearer"]
    login_path: str = Field(description="Path POSTed with username and password.")
    username: str
    password: SecretStr
    token_field: str = Field("token", description="Dotted path of the token in the reply.")
    ttl_seconds: float = Field(7200, gt=0, description="Token lifetime; refreshed before.")


class ApiKeyAuth(Model):
    type: Literal["api_key"]
    header: str = Field(description="Header that carries the key, e.g. X-API-Key.")
    value: SecretStr


class BasicAuth(Model):
    type: Literal["basic"]
    username: str
    password: SecretStr


Auth = Annotated[
    NoAuth | SessionAuth | BearerAuth | ApiKeyAuth | BasicAuth, Field(discriminator="type")
]


class Execute(Model):
    method: str = Field("POST", description="HTTP method of an integration call.")
    path: str = Field(
        "/integrations/{integration_id}/execute",
        description="Path of an integration call; {integration_id} is filled in.",
    )


class Environment(Model):
    base_url: str = Field(description="Root URL of the integration platform.")
    auth: Auth = Field(default_factory=lambda: NoAuth(type="none"))
    execute: Execute = Field(default_factory=Execute)
    timeout_seconds: float = Field(30, gt=0, description="Connect and read timeout per call.")
    retries: int = Field(5, ge=0, le=100, description="Retries after the first attempt.")
    backoff_seconds: float = Field(1.0, ge=0, description="First retry delay, doubled each.")
    backoff_max_seconds: float = Field(60.0, ge=0, description="Cap of one retry delay.")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent on every call.")
    max_response_bytes: int = Field(
        MAX_RESPONSE_BYTES,
        ge=1,
        description="Cap of a response body's decoded size; refused past it.",
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError('expected an http:// or https:// URL, e.g. "https://api.example.com"')
        return value.rstrip("/")


def basic_credentials(username: str, password: str) -> tuple[str, str]:
    """The Authorization value of HTTP Basic auth, and its base64 part (both secrets)."""
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return "Basic " + encoded, encoded
