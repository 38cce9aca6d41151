"""Models of a file source (SPEC §10): where a polling job (or a `files` chain entry) lists
files, one model per `source_type`, and what of each is secret. They only describe and
validate; listing is poller.sources' work.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, SecretStr, Tag

from poller.config.base import Model
from poller.config.constraints import HTTP_URL_PATTERN, text_matching

SOURCE_TYPES = ("dummy", "local", "sftp", "ftp", "ftps", "s3", "http")


class DummySource(Model):
    source_type: Literal["dummy"]
    path: str | None = Field(
        None, description="The sample files' folder (default: $DUMMY_DATA_PATH, else dummy_data/)."
    )


class LocalSource(Model):
    source_type: Literal["local"]
    path: str = Field(min_length=1, description="A folder on the worker's machine.")


class SftpSource(Model):
    source_type: Literal["sftp"]
    host: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    username: str = Field(min_length=1)
    password: SecretStr | None = Field(None, description='Use "${SFTP_PASSWORD}".')
    private_key_path: str | None = Field(None, description="A private key file (PEM/OpenSSH).")
    passphrase: SecretStr | None = Field(None, description="The private key's passphrase.")
    known_hosts_path: str | None = Field(
        None, description="Host keys to trust (default: ~/.ssh/known_hosts)."
    )
    host_key_policy: Literal["reject", "accept-new"] = Field(
        "reject",
        description='An unknown host key is refused ("reject"), or trusted the first time and '
        'written to known_hosts_path ("accept-new"); a changed key is always refused.',
    )
    path: str = Field(".", description="The folder listed.")
    timeout_seconds: float = Field(10, gt=0, le=300)


class FtpSource(Model):
    source_type: Literal["ftp", "ftps"]
    host: str = Field(min_length=1)
    port: int = Field(21, ge=1, le=65535)
    username: str = Field("anonymous")
    password: SecretStr | None = Field(None, description='Use "${FTP_PASSWORD}".')
    path: str = Field(".", description="The folder listed.")
    timeout_seconds: float = Field(10, gt=0, le=300)


class S3Source(Model):
    source_type: Literal["s3"]
    bucket: str = Field(min_length=1)
    prefix: str = Field("", description="Only keys under this prefix are listed.")
    endpoint_url: str | None = Field(
        None,
        description="An S3-compatible store's address (default: AWS).",
        json_schema_extra=text_matching(HTTP_URL_PATTERN),
    )
    region: str | None = None
    access_key_id: SecretStr | None = Field(None, description='Use "${AWS_ACCESS_KEY_ID}".')
    secret_access_key: SecretStr | None = Field(None, description='Use "${AWS_SECRET_ACCESS_KEY}".')
    timeout_seconds: float = Field(10, gt=0, le=300)


class HttpSource(Model):
    source_type: Literal["http"]
    url: str = Field(
        description="A directory index: JSON (nginx autoindex_format json) or HTML.",
        json_schema_extra=text_matching(HTTP_URL_PATTERN),
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request.")
    timeout_seconds: float = Field(10, gt=0, le=300)


def _source_kind(value: Any) -> str | None:
    kind = value.get("source_type") if isinstance(value, dict) else None
    if kind is None:
        kind = getattr(value, "source_type", None)
    return "ftp" if kind == "ftps" else kind if kind in SOURCE_TYPES else None


SourceConfig = Annotated[
    Annotated[DummySource, Tag("dummy")]
    | Annotated[LocalSource, Tag("local")]
    | Annotated[SftpSource, Tag("sftp")]
    | Annotated[FtpSource, Tag("ftp")]
    | Annotated[S3Source, Tag("s3")]
    | Annotated[HttpSource, Tag("http")],
    Discriminator(
        _source_kind,
        custom_error_type="source",
        custom_error_message='expected "source_type": one of ' + ", ".join(SOURCE_TYPES),
    ),
]


def secret_values(source: Any) -> list[str]:
    """The secrets of a source config (passwords, keys, header values), to mask them."""
    values = [
        getattr(source, name).get_secret_value()
        for name in ("password", "passphrase", "access_key_id", "secret_access_key")
        if isinstance(getattr(source, name, None), SecretStr)
    ]
    if isinstance(source, HttpSource):
        # Imported here: environments imports chain, which holds sources in its entries.
        from poller.config.environments import PUBLIC_HEADERS

        values.extend(v for k, v in source.headers.items() if k.lower() not in PUBLIC_HEADERS)
    return [value for value in values if value]
