"""File sources (SPEC §10): `open_source` opens the source a config names. The modules of
the remote types import their library (paramiko, ftplib, boto3) only when one is opened."""

from __future__ import annotations

from collections.abc import Mapping

from poller.config.sources import (
    DummySource,
    FtpSource,
    HttpSource,
    LocalSource,
    S3Source,
    SftpSource,
    SourceConfig,
)
from poller.sources.base import FileInfo, Source, SourceError, is_recursive, matching

__all__ = ["FileInfo", "Source", "SourceError", "is_recursive", "matching", "open_source"]


def open_source(config: SourceConfig, environ: Mapping[str, str]) -> Source:
    """Connect to the source `config` names; raises SourceError."""
    if isinstance(config, DummySource):
        from poller.sources.local import open_dummy

        return open_dummy(config, environ)
    if isinstance(config, LocalSource):
        from poller.sources.local import open_local

        return open_local(config)
    if isinstance(config, SftpSource):
        from poller.sources.sftp import open_sftp

        return open_sftp(config)
    if isinstance(config, FtpSource):
        from poller.sources.ftp import open_ftp

        return open_ftp(config)
    if isinstance(config, S3Source):
        from poller.sources.s3 import open_s3

        return open_s3(config)
    if isinstance(config, HttpSource):
        from poller.sources.http import open_http

        return open_http(config)
    raise SourceError(str(config), "unknown source type", is_retryable=False)
