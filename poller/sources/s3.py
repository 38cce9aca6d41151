"""`s3` source: the objects under a prefix of a bucket, on AWS or an S3-compatible store,
listed with boto3's list_objects_v2 paginator. It only lists: it never reads an object.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from poller.redaction import Redactor
from poller.sources.base import MAX_DEPTH, FileInfo, SourceError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from poller.config.sources import S3Source

TOTAL_ATTEMPTS = 3
"""Tries of one request (a page) before its error is raised: the worker polls again later,
so a few quick retries within a listing are enough."""

_CREDENTIALS_REFUSED = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidSecurity",
    }
)
_ACCESS_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
_MOVED = frozenset({"PermanentRedirect", "IllegalLocationConstraintException"})
_RETRYABLE = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}
)


def folder_prefix(prefix: str) -> str:
    """The prefix as a folder ("in" and "/in/" are "in/"), so that `files` lists the same
    place whatever the spelling and a non-recursive listing finds the folder's own files."""
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


class BucketSource:
    """The objects of `bucket` under `prefix`, through one boto3 client."""

    def __init__(
        self, client: S3Client, bucket: str, prefix: str, identity: str, secrets: Iterable[str]
    ) -> None:
        self.identity = identity
        self._client = client
        self._bucket = bucket
        self._prefix = folder_prefix(prefix)
        self._redactor = Redactor(secrets)  # botocore's own texts, in case one echoes a key
        self._is_closed = False

    def files(self, recursive: bool) -> Iterator[FileInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        # With a delimiter the store folds deeper keys into CommonPrefixes (which we do not
        # follow), so a non-recursive listing costs one page per 1,000 own objects only.
        pages = (
            paginator.paginate(Bucket=self._bucket, Prefix=self._prefix)
            if recursive
            else paginator.paginate(Bucket=self._bucket, Prefix=self._prefix, Delimiter="/")
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    key = item.get("Key", "")
                    path = key[len(self._prefix) :].lstrip("/")
                    if not path or path.endswith("/"):
                        continue  # the folder itself, or a "folder marker" object
                    if path.count("/") > MAX_DEPTH:
                        continue
                    modified = item.get("LastModified")
                    etag = item.get("ETag")
                    yield FileInfo(
                        path,
                        item.get("Size"),
                        modified.astimezone(UTC) if modified else None,
                        etag=etag.strip('"') if etag else None,
                    )
        except (ClientError, BotoCoreError) as err:
            raise self._error(err) from None

    def _error(self, err: ClientError | BotoCoreError) -> SourceError:
        """The SourceError of a botocore error, its reason built from codes, not from the
        store's message (which may echo the access key or the string it signed)."""
        if isinstance(err, ClientError):
            return client_error(self.identity, err)
        if isinstance(err, ConnectTimeoutError | ReadTimeoutError):
            return SourceError(self.identity, "timed out")
        if isinstance(err, EndpointConnectionError):
            return SourceError(self.identity, "cannot connect to the endpoint")
        if isinstance(err, NoCredentialsError):
            reason = "no credentials: set access_key_id and secret_access_key, or AWS_* variables"
            return SourceError(self.identity, reason, is_retryable=False)
        if isinstance(err, ParamValidationError):
            reason = f"invalid request: {self._redactor.text(str(err))}"
            return SourceError(self.identity, reason, is_retryable=False)
        return SourceError(self.identity, f"{type(err).__name__}: {self._redactor.text(str(err))}")

    def close(self) -> None:
        if not self._is_closed:
            self._is_closed = True
            self._client.close()


def client_error(identity: str, err: ClientError) -> SourceError:
    """The SourceError of an error the store answered."""
    code = str(err.response.get("Error", {}).get("Code", ""))
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code == "NoSuchBucket":
        return SourceError(identity, "no such bucket", is_retryable=False)
    if code in _CREDENTIALS_REFUSED:
        return SourceError(identity, f"credentials refused ({code})", is_retryable=False)
    if code in _ACCESS_DENIED or status == 403:
        return SourceError(identity, f"access denied ({code or 'HTTP 403'})", is_retryable=False)
    if code in _MOVED or status == 301:
        return SourceError(identity, "the bucket is in another region", is_retryable=False)
    shown = f"{code}, HTTP {status}" if code else f"HTTP {status}"
    is_retryable = code in _RETRYABLE or status >= 500 or status in (408, 429)
    reason = f"the store answered an error ({shown})"
    return SourceError(identity, reason, is_retryable=is_retryable)


def s3_identity(config: S3Source) -> str:
    """`s3://bucket/prefix/`, with `@host:port` of an S3-compatible store (no userinfo)."""
    identity = f"s3://{config.bucket}/{folder_prefix(config.prefix)}"
    if config.endpoint_url:
        identity += "@" + urlsplit(config.endpoint_url).netloc.rpartition("@")[2]
    return identity


def open_s3(config: S3Source) -> BucketSource:
    identity = s3_identity(config)
    key_id, secret = config.access_key_id, config.secret_access_key
    if (key_id is None) != (secret is None):
        reason = "access_key_id and secret_access_key are set together, or neither"
        raise SourceError(identity, reason, is_retryable=False)
    settings = Config(
        connect_timeout=config.timeout_seconds,
        read_timeout=config.timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": TOTAL_ATTEMPTS},
        # Stores other than AWS seldom have a DNS name per bucket.
        s3={"addressing_style": "path"} if config.endpoint_url else None,
    )
    # Signing needs a region; an S3-compatible store mostly ignores which.
    region = config.region or ("us-east-1" if config.endpoint_url else None)
    try:
        # A session of its own, not boto3's module-level default one; without keys it takes
        # the default chain (environment, ~/.aws, instance role).
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=region,
            aws_access_key_id=key_id.get_secret_value() if key_id else None,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=settings,
        )
    except (BotoCoreError, ValueError) as err:
        reason = f"cannot make a client: {type(err).__name__}"
        raise SourceError(identity, reason, is_retryable=False) from None
    secrets = [value.get_secret_value() for value in (key_id, secret) if value is not None]
    return BucketSource(client, config.bucket, config.prefix, identity, secrets)
