"""`sftp` source: a folder on an SSH server, listed with paramiko's SFTP client. It checks the
server's host key against known_hosts itself and never trusts a key silently; it only reads.
"""

from __future__ import annotations

import logging
import os
import posixpath
import socket
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Never

import paramiko
from paramiko.hostkeys import HostKeyEntry
from paramiko.pkey import UnknownKeyType
from paramiko.ssh_exception import NoValidConnectionsError

from poller.config.sources import SftpSource, secret_values
from poller.sources.base import MAX_DEPTH, FileInfo, SourceError

log = logging.getLogger(__name__)

KNOWN_HOSTS = "~/.ssh/known_hosts"
_ERRORS = (paramiko.SSHException, OSError, EOFError)
"""What paramiko raises: its own errors, socket errors, and EOF on a closed connection."""


class SftpFolder:
    """One folder over an open SFTP session."""

    def __init__(
        self,
        identity: str,
        client: paramiko.SSHClient,
        sftp: paramiko.SFTPClient,
        path: str,
        timeout_seconds: float,
    ) -> None:
        self.identity = identity
        self._client = client
        self._sftp = sftp
        self._path = path
        self._timeout_seconds = timeout_seconds

    def files(self, recursive: bool) -> Iterator[FileInfo]:
        try:
            mode = self._sftp.stat(self._path).st_mode
        except FileNotFoundError:
            raise SourceError(
                self.identity, f"no such folder: {self._path}", is_retryable=False
            ) from None
        except _ERRORS as err:
            raise self._error(err, self._path) from None
        if mode is None or not stat.S_ISDIR(mode):
            raise SourceError(self.identity, f"not a folder: {self._path}", is_retryable=False)
        yield from self._walk(self._path, "", recursive, 0)

    def _walk(self, folder: str, prefix: str, recursive: bool, depth: int) -> Iterator[FileInfo]:
        try:
            entries = sorted(self._sftp.listdir_attr(folder), key=lambda entry: entry.filename)
        except FileNotFoundError:
            if depth == 0:
                raise SourceError(
                    self.identity, f"no such folder: {self._path}", is_retryable=False
                ) from None
            return  # removed while we listed its parent: not there any more
        except _ERRORS as err:
            raise self._error(err, folder) from None
        for entry in entries:
            path = prefix + entry.filename
            full_path = posixpath.join(folder, entry.filename)
            mode = entry.st_mode or 0
            if stat.S_ISLNK(mode):
                # Like the local source: a link to a file is that file, a link to a folder
                # is not walked (it could loop back up).
                followed = self._followed(full_path)
                if followed is None:
                    continue
                entry, mode = followed, followed.st_mode or 0
                if not stat.S_ISREG(mode):
                    continue
            if stat.S_ISREG(mode):
                yield FileInfo(path, entry.st_size, _utc(entry.st_mtime))
            elif stat.S_ISDIR(mode) and recursive and depth < MAX_DEPTH:
                yield from self._walk(full_path, path + "/", recursive, depth + 1)

    def _followed(self, path: str) -> paramiko.SFTPAttributes | None:
        try:
            return self._sftp.stat(path)
        except FileNotFoundError:
            return None  # a dangling link
        except _ERRORS as err:
            raise self._error(err, path) from None

    def _error(self, err: BaseException, where: str) -> SourceError:
        if isinstance(err, PermissionError):
            return SourceError(self.identity, f"{where}: permission denied")
        if type(err) is OSError and err.errno is None:
            # the server's own words for a failed request ("Failure"), or a closed channel
            return SourceError(self.identity, f"{where}: {err}")
        reason, is_retryable = _failure(err, self._timeout_seconds, "")
        return SourceError(self.identity, reason, is_retryable=is_retryable)

    def close(self) -> None:
        # Both are no-ops once closed, so closing twice is safe.
        self._sftp.close()
        self._client.close()


def open_sftp(config: SftpSource) -> SftpFolder:
    """Connect, check the host key, log in (key, then password) and open an SFTP session."""
    identity = sftp_identity(config)
    timeout = config.timeout_seconds
    pkey = _private_key(config, identity) if config.private_key_path else None
    client = paramiko.SSHClient()
    known_hosts = Path(config.known_hosts_path or KNOWN_HOSTS).expanduser()
    try:
        if known_hosts.exists():
            client.load_host_keys(str(known_hosts))
    except (OSError, paramiko.SSHException, ValueError) as err:
        raise SourceError(
            identity, f"could not read {known_hosts} ({type(err).__name__})", is_retryable=False
        ) from None
    if config.host_key_policy == "accept-new":
        client.set_missing_host_key_policy(_AcceptNew(known_hosts))
    else:
        client.set_missing_host_key_policy(_RejectUnknown(known_hosts))
    try:
        client.connect(
            config.host,
            config.port,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            pkey=pkey,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
        sftp = client.open_sftp()
    except _ERRORS as err:
        client.close()
        key_name = config.host if config.port == 22 else f"[{config.host}]:{config.port}"
        reason, is_retryable = _failure(err, timeout, key_name)
        raise SourceError(
            identity, _scrubbed(reason, secret_values(config)), is_retryable=is_retryable
        ) from None
    channel = sftp.get_channel()
    if channel is not None:
        channel.settimeout(timeout)  # a listing that stalls fails instead of hanging the worker
    return SftpFolder(identity, client, sftp, config.path, timeout)


def sftp_identity(config: SftpSource) -> str:
    """`sftp://USER@HOST:PORT/PATH`; a path relative to the login folder is `/~/PATH`."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    path = posixpath.normpath(config.path)
    where = path if path.startswith("/") else "/~" if path == "." else f"/~/{path}"
    return f"sftp://{config.username}@{host}:{config.port}{where}"


def _private_key(config: SftpSource, identity: str) -> paramiko.PKey:
    path = Path(config.private_key_path or "").expanduser()
    passphrase = config.passphrase.get_secret_value().encode() if config.passphrase else None
    try:
        # paramiko 5.1 hands the passphrase to cryptography, which takes bytes only.
        return paramiko.PKey.from_path(path, passphrase)  # type: ignore[arg-type]
    except FileNotFoundError:
        reason = f"no private key at {path}"
    except TypeError:  # cryptography: encrypted without a passphrase, or the reverse
        needs = (
            "is not encrypted: remove passphrase" if passphrase else "is encrypted: set passphrase"
        )
        reason = f"private key {path} {needs}"
    except (OSError, ValueError, paramiko.SSHException, UnknownKeyType) as err:
        hint = ", or a wrong passphrase" if passphrase else ""
        reason = f"could not load private key {path} ({type(err).__name__}{hint})"
    raise SourceError(identity, reason, is_retryable=False)


class _HostKeyError(paramiko.SSHException):
    """A host key we will not trust, or could not record; `reason` is the SourceError's."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _described(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


class _RejectUnknown(paramiko.RejectPolicy):
    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> Never:
        raise _HostKeyError(
            f"host key for {hostname} not in {self.known_hosts} ({_described(key)})"
        )


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """OpenSSH's StrictHostKeyChecking=accept-new: trust an unknown host's key the first time
    and write it down, so that a later, different key is refused (paramiko raises
    BadHostKeyException for a key that differs from the recorded one)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        line = HostKeyEntry([hostname], key).to_line()
        try:
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.known_hosts, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            with open(fd, "r+", encoding="utf-8") as file:
                text = file.read()
                file.write(("" if not text or text.endswith("\n") else "\n") + (line or ""))
        except OSError as err:
            # Trusting a key we could not record would trust every later key too.
            raise _HostKeyError(
                f"could not save the host key of {hostname} to {self.known_hosts} "
                f"({type(err).__name__})"
            ) from None
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning(
            "trusted the new host key of %s (%s), saved to %s",
            hostname,
            _described(key),
            self.known_hosts,
        )


def _failure(err: BaseException, timeout_seconds: float, key_name: str) -> tuple[str, bool]:
    """A short reason for a paramiko or socket error, and whether trying again may help.
    `key_name` is the server's name in known_hosts ("[host]:port")."""
    if isinstance(err, _HostKeyError):
        return err.reason, False
    if isinstance(err, paramiko.BadHostKeyException):
        return (
            f"host key for {key_name} changed: the server sent {_described(err.key)}, "
            f"known_hosts has {_described(err.expected_key)}",
            False,
        )
    if _timed_out(err):
        return f"timed out after {timeout_seconds:g} s", True
    if isinstance(err, paramiko.BadAuthenticationType):
        return f"authentication failed (the server accepts {', '.join(err.allowed_types)})", False
    if isinstance(err, paramiko.AuthenticationException):
        return "authentication failed", False
    if isinstance(err, NoValidConnectionsError):
        first: BaseException = next(iter(err.errors.values()), err)
        return f"could not connect ({type(first).__name__})", True
    if isinstance(err, socket.gaierror):
        return "could not resolve the host name", True
    if isinstance(err, ConnectionRefusedError):
        return f"could not connect ({type(err).__name__})", True
    if isinstance(err, OSError):
        return f"connection failed ({type(err).__name__})", True
    if isinstance(err, EOFError):
        return "the server closed the connection", True
    return f"SSH error: {err}", True


def _timed_out(err: BaseException) -> bool:
    # paramiko wraps a socket timeout in SSHException("Error reading SSH protocol banner")
    # (the timeout is its context) and says "Authentication timeout." in words. When the key
    # exchange takes too long, connect() goes on regardless and then finds "No existing
    # session".
    if str(err) == "No existing session":
        return True
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "timeout" in str(err).lower()


def _scrubbed(reason: str, secrets: list[str]) -> str:
    for secret in secrets:
        reason = reason.replace(secret, "***")
    return reason


def _utc(timestamp: int | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
