"""`ftp` and `ftps` sources: a folder on an FTP server, listed with ftplib (MLSD, or NLST with
SIZE and MDTM where the server has no MLSD). `ftps` is explicit TLS on both channels, the
certificate checked against the system's CAs. It only reads.
"""

from __future__ import annotations

import ftplib
import posixpath
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from poller.config.sources import FtpSource, secret_values
from poller.sources.base import MAX_DEPTH, FileInfo, SourceError

_UNKNOWN_COMMAND = ("500", "502")
"""Replies of a server that does not have a command (MLSD, SIZE, MDTM)."""


class SessionReusingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session.

    Servers such as vsftpd (require_ssl_reuse=YES, its default) refuse a data connection
    that starts a new TLS session ("522 SSL connection failed: session reuse required"): the
    resumed session proves the data channel's peer is the client that logged in, not whoever
    raced it to the passive port. ftplib's FTP_TLS never resumes one.
    """

    is_private = False
    """After PROT P: the data channel is encrypted too."""

    def prot_p(self) -> str:
        answer = super().prot_p()
        self.is_private = True
        return answer

    def prot_c(self) -> str:
        answer = super().prot_c()
        self.is_private = False
        return answer

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)  # the plain socket: wrapped here
        if self.is_private:
            session = self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    is_folder: bool
    size: int | None = None
    modified_at: datetime | None = None


class FtpFolder:
    """One folder (an absolute path) over a logged-in FTP control connection."""

    def __init__(self, identity: str, ftp: ftplib.FTP, folder: str, timeout_seconds: float) -> None:
        self.identity = identity
        self._ftp = ftp
        self._folder = folder
        self._timeout_seconds = timeout_seconds
        self._has_mlsd = self._has_size = self._has_mdtm = True
        self._is_closed = False

    def files(self, recursive: bool) -> Iterator[FileInfo]:
        try:
            self._ftp.cwd(self._folder)
        except ftplib.error_perm as err:
            if str(err).startswith("550"):
                raise SourceError(
                    self.identity, f"no such folder: {self._folder}", is_retryable=False
                ) from None
            raise self._error(err) from None
        except ftplib.all_errors as err:
            raise self._error(err) from None
        yield from self._walk(self._folder, "", recursive, 0)

    def _walk(self, folder: str, prefix: str, recursive: bool, depth: int) -> Iterator[FileInfo]:
        try:
            entries = self._entries(folder, recursive)
        except ftplib.all_errors as err:
            raise self._error(err, folder) from None
        for entry in entries:
            path = prefix + entry.name
            if not entry.is_folder:
                yield FileInfo(path, entry.size, entry.modified_at)
            elif recursive and depth < MAX_DEPTH:
                yield from self._walk(
                    posixpath.join(folder, entry.name), path + "/", True, depth + 1
                )

    def _entries(self, folder: str, recursive: bool) -> list[_Entry]:
        if self._has_mlsd:
            try:
                return sorted(_mlsd_entries(self._ftp, folder), key=lambda entry: entry.name)
            except ftplib.error_perm as err:
                if not str(err).startswith(_UNKNOWN_COMMAND):
                    raise
                self._has_mlsd = False
        return self._entries_by_name(folder, recursive)

    def _entries_by_name(self, folder: str, recursive: bool) -> list[_Entry]:
        """The fallback without MLSD: NLST for the names, SIZE (a folder has none) and MDTM
        for each, and a CWD into what has no size to tell a folder from what is not a file."""
        self._ftp.cwd(folder)  # NLST without an argument answers bare names, not paths
        try:
            names = self._ftp.nlst()
        except ftplib.error_perm as err:
            if not str(err).startswith("550"):  # some servers' answer for an empty folder
                raise
            names = []
        self._ftp.voidcmd("TYPE I")  # SIZE is the byte count only in binary mode
        entries = []
        for name in sorted({name.rpartition("/")[2] for name in names} - {"", ".", ".."}):
            size = self._size(name)
            # No size: a folder, something else that is not a file, or a server without SIZE.
            if size is None and (recursive or not self._has_size) and self._is_folder(name, folder):
                if recursive:
                    entries.append(_Entry(name, True))
            elif size is not None or not self._has_size:
                entries.append(_Entry(name, False, size, self._modified_at(name)))
        return entries

    def _size(self, name: str) -> int | None:
        if not self._has_size:
            return None
        try:
            return self._ftp.size(name)
        except ftplib.error_perm as err:
            if str(err).startswith(_UNKNOWN_COMMAND):
                self._has_size = False
            return None

    def _modified_at(self, name: str) -> datetime | None:
        if not self._has_mdtm:
            return None
        try:
            answer = self._ftp.sendcmd(f"MDTM {name}")
        except ftplib.error_perm as err:
            if str(err).startswith(_UNKNOWN_COMMAND):
                self._has_mdtm = False
            return None
        return _timestamp(answer[4:].strip()) if answer.startswith("213") else None

    def _is_folder(self, name: str, folder: str) -> bool:
        try:
            self._ftp.cwd(name)
        except ftplib.error_perm:
            return False
        self._ftp.cwd(folder)
        return True

    def _error(self, err: BaseException, where: str = "") -> SourceError:
        reason, is_retryable = _failure(err, self._timeout_seconds)
        return SourceError(
            self.identity, f"{where}: {reason}" if where else reason, is_retryable=is_retryable
        )

    def close(self) -> None:
        if self._is_closed:
            return
        self._is_closed = True
        try:
            self._ftp.quit()
        except ftplib.all_errors:
            pass  # the server went first: closing is all that is left
        finally:
            self._ftp.close()


def open_ftp(config: FtpSource) -> FtpFolder:
    """Connect, for ftps switch both channels to TLS, and log in."""
    identity = ftp_identity(config)
    timeout = config.timeout_seconds
    ftp: ftplib.FTP
    if config.source_type == "ftps":
        ftp = SessionReusingFTP_TLS(context=ssl.create_default_context(), timeout=timeout)
    else:
        ftp = ftplib.FTP(timeout=timeout)
    stage = "connect"
    try:
        ftp.connect(config.host, config.port)
        if isinstance(ftp, ftplib.FTP_TLS):
            stage = "tls"
            ftp.auth()
        stage = "login"
        ftp.login(config.username, config.password.get_secret_value() if config.password else "")
        if isinstance(ftp, ftplib.FTP_TLS):
            stage = "tls"
            ftp.prot_p()
        stage = ""
        # Absolute, because listing moves the working folder around.
        folder = posixpath.normpath(posixpath.join(ftp.pwd(), config.path))
        return FtpFolder(identity, ftp, folder, timeout)
    except ftplib.all_errors as err:
        ftp.close()
        reason, is_retryable = _failure(err, timeout, stage)
        for secret in secret_values(config):
            reason = reason.replace(secret, "***")
        raise SourceError(identity, reason, is_retryable=is_retryable) from None


def ftp_identity(config: FtpSource) -> str:
    """`ftp://USER@HOST:PORT/PATH` (`ftps://…`); a path relative to the login folder is
    `/~/PATH`."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    path = posixpath.normpath(config.path)
    where = path if path.startswith("/") else "/~" if path == "." else f"/~/{path}"
    return f"{config.source_type}://{config.username}@{host}:{config.port}{where}"


def _mlsd_entries(ftp: ftplib.FTP, folder: str) -> Iterator[_Entry]:
    for name, facts in ftp.mlsd(folder):
        kind = facts.get("type", "").lower()
        if kind == "file":
            size = facts.get("size", "")
            modified = facts.get("modify")
            yield _Entry(
                name,
                False,
                int(size) if size.isdigit() else None,
                _timestamp(modified) if modified else None,
            )
        elif kind == "dir":
            yield _Entry(name, True)


def _timestamp(value: str) -> datetime | None:
    """RFC 3659's time-val, always UTC: YYYYMMDDHHMMSS[.sss]."""
    try:
        moment = datetime.strptime(value[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    fraction = value[15:21] if value[14:15] == "." else ""
    return moment.replace(microsecond=int(fraction.ljust(6, "0"))) if fraction.isdigit() else moment


def _failure(err: BaseException, timeout_seconds: float, stage: str = "") -> tuple[str, bool]:
    """A short reason for an ftplib, TLS or socket error, and whether trying again may help."""
    if isinstance(err, ftplib.error_perm):
        if stage == "login" or str(err).startswith("530"):
            return f"login refused ({err})", False
        if stage == "tls":
            return f"the server refused TLS ({err})", False
        return f"the server refused: {err}", False
    if isinstance(err, ftplib.error_temp):
        return f"the server is unavailable: {err}", True
    if isinstance(err, ftplib.Error):
        return f"unexpected reply ({err})", True
    if isinstance(err, TimeoutError):
        return f"timed out after {timeout_seconds:g} s", True
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({err.verify_message})", False
    if isinstance(err, ssl.SSLError):
        return f"TLS failed ({err.reason or type(err).__name__})", True
    if isinstance(err, socket.gaierror):
        return "could not resolve the host name", True
    if isinstance(err, OSError):
        verb = "could not connect" if stage == "connect" else "connection failed"
        return f"{verb} ({type(err).__name__})", True
    if isinstance(err, EOFError):
        return "the server closed the connection", True
    return f"{type(err).__name__}: {err}", True
