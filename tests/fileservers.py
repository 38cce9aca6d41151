"""Real file servers for the remote source tests: Debian's sshd and vsftpd as subprocesses on
free ports, each with its own config in a temporary folder, pyftpdlib in a thread, and a
throwaway local user for the two that log in through the system's accounts (tests run as root).
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from poller.sources.base import FileInfo

SSHD = Path("/usr/sbin/sshd")
VSFTPD = Path("/usr/sbin/vsftpd")
HOST = "127.0.0.1"
READY_SECONDS = 10.0

TREE = {
    "a.csv": b"id,name\n1,one\n",
    "b.txt": b"hello",
    "sub/c.csv": b"c" * 1000,
    "sub/deeper/d.csv": b"",
    "with space.csv": b"x y",
}
"""The files every server serves (in this order when listed recursively), and an empty folder."""
EMPTY_FOLDER = "empty"
MODIFIED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def require(program: Path, package: str) -> None:
    """Skip without `program` here; in CI (.ci/run installs it) its absence is a failure."""
    if not program.exists():
        _missing(f"{program} is missing (apt-get install {package}; .ci/run installs it)")


def require_root() -> None:
    if os.geteuid() != 0:
        _missing("these tests run as root: they add a throwaway local user")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def write_tree(folder: Path, owner: str | None = None) -> list[FileInfo]:
    """TREE under `folder` with whole-second mtimes; returns what a recursive listing gives."""
    expected = []
    for index, (path, content) in enumerate(TREE.items()):
        file = folder / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
        modified = MODIFIED_AT + timedelta(hours=index, seconds=index)
        os.utime(file, (modified.timestamp(), modified.timestamp()))
        expected.append(FileInfo(path, len(content), modified))
    (folder / EMPTY_FOLDER).mkdir()
    if owner:
        for path in [folder, *folder.rglob("*")]:
            shutil.chown(path, owner, owner)
    return expected


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def free_port_range(count: int) -> int:
    """The first of `count` consecutive free ports (vsftpd's passive range)."""
    for _ in range(100):
        first = random.randrange(20_000, 60_000)
        probes = []
        try:
            for port in range(first, first + count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind((HOST, port))
            return first
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until something accepts on `port`; fails at once if `process` died, with its log."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited {process.returncode}: {log.read_text()}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing on port {port} after {READY_SECONDS} s") from None
            time.sleep(0.02)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a server started in its own process group, with the sessions it forked."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


@dataclass(frozen=True, slots=True)
class LocalUser:
    name: str
    password: str
    home: Path


@contextmanager
def local_user() -> Iterator[LocalUser]:
    """A throwaway account with a password and a home under /tmp, removed afterwards."""
    name = "poller" + secrets.token_hex(4)
    password = "pw-" + secrets.token_hex(10)
    # /tmp rather than pytest's tmp_path: that is root's alone, and the user must get in
    home = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash",
         "--user-group", name],
        check=True,
        capture_output=True,
    )  # fmt: skip
    try:
        subprocess.run(
            ["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True
        )
        shutil.chown(home, name, name)
        yield LocalUser(name, password, home)
    finally:
        subprocess.run(["userdel", "--force", name], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def make_key(path: Path, kind: str = "ed25519", passphrase: str = "") -> Path:
    """An OpenSSH key pair at `path` and `path`.pub."""
    bits = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *bits, "-N", passphrase, "-C", "poller-test", "-f",
         str(path)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return path


class SshServer:
    """OpenSSH's sshd for one user: password and public key logins, SFTP only."""

    def __init__(self, folder: Path, user: LocalUser) -> None:
        self.folder = folder
        self.user = user
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.host_key: Path | None = None
        self.log = folder / "sshd.log"

    def start(self, host_key: Path) -> None:
        self.host_key = host_key
        config = self.folder / "sshd_config"
        config.write_text(
            f"ListenAddress {HOST}:{self.port}\n"
            f"HostKey {host_key}\n"
            f"PidFile {self.folder / 'sshd.pid'}\n"
            f"AllowUsers {self.user.name}\n"
            "UsePAM no\n"
            "PasswordAuthentication yes\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "AuthorizedKeysFile .ssh/authorized_keys\n"
            "StrictModes no\n"
            "PermitRootLogin no\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel VERBOSE\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_listening(self.port, self.process, self.log)

    def stop(self) -> None:
        stop(self.process)
        self.process = None

    def known_hosts_line(self) -> str:
        assert self.host_key is not None
        kind, key = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[{HOST}]:{self.port} {kind} {key}\n"

    def authorize(self, public_key: Path) -> None:
        folder = self.user.home / ".ssh"
        folder.mkdir(mode=0o700, exist_ok=True)
        with open(folder / "authorized_keys", "a") as keys:
            keys.write(public_key.read_text())
        for path in (folder, folder / "authorized_keys"):
            shutil.chown(path, self.user.name, self.user.name)


class Vsftpd:
    """vsftpd for the local user, TLS required on both channels with session reuse."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.cert = folder / "cert.pem"
        self.log = folder / "vsftpd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        key = self.folder / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
             str(self.cert), "-days", "2", "-subj", f"/CN={HOST}", "-addext",
             f"subjectAltName=IP:{HOST}"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        empty = self.folder / "empty"
        empty.mkdir()
        passive = free_port_range(10)
        config = self.folder / "vsftpd.conf"
        config.write_text(
            "listen=YES\nlisten_ipv6=NO\n"
            f"listen_address={HOST}\nlisten_port={self.port}\n"
            "background=NO\n"
            "anonymous_enable=NO\nlocal_enable=YES\nwrite_enable=NO\n"
            "pam_service_name=vsftpd\n"
            "ssl_enable=YES\nrequire_ssl_reuse=YES\n"
            "force_local_logins_ssl=YES\nforce_local_data_ssl=YES\n"
            f"rsa_cert_file={self.cert}\nrsa_private_key_file={key}\n"
            "ssl_ciphers=HIGH\n"
            f"pasv_enable=YES\npasv_min_port={passive}\npasv_max_port={passive + 9}\n"
            "connect_from_port_20=NO\n"
            f"secure_chroot_dir={empty}\n"
            "seccomp_sandbox=NO\n"
            "delay_failed_login=0\n"
            "use_localtime=NO\n"  # MDTM in UTC, as RFC 3659 says
            "syslog_enable=NO\nxferlog_enable=NO\n"
            f"vsftpd_log_file={self.log}\ndual_log_enable=NO\n"
        )
        self.log.touch()
        with open(self.folder / "vsftpd.out", "ab") as out:
            self.process = subprocess.Popen(
                [str(VSFTPD), str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        wait_listening(self.port, self.process, self.folder / "vsftpd.out")

    def stop(self) -> None:
        stop(self.process)
        self.process = None


class PyFtpServer:
    """pyftpdlib in a thread, one user; without MLSD if told, to make clients fall back."""

    def __init__(self, root: Path, user: str, password: str, *, has_mlsd: bool = True) -> None:
        authorizer = DummyAuthorizer()
        authorizer.add_user(user, password, str(root), perm="elr")
        self.commands: list[str] = []
        commands = self.commands
        refused = () if has_mlsd else ("MLSD", "MLST")

        class Handler(FTPHandler):
            auth_failed_timeout = 0.01  # pyftpdlib waits 3 s after a wrong password

            def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
                commands.append(cmd)
                super().pre_process_command(line, cmd, arg)

        Handler.authorizer = authorizer
        Handler.proto_cmds = {
            name: spec for name, spec in FTPHandler.proto_cmds.items() if name not in refused
        }
        self.server = FTPServer((HOST, 0), Handler, ioloop=IOLoop())  # not the shared one
        self.port = int(self.server.socket.getsockname()[1])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="pyftpdlib", daemon=True)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self.server.serve_forever(timeout=0.02, blocking=False, handle_exit=False)
        self.server.close_all()

    def __enter__(self) -> PyFtpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(5)
