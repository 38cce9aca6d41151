"""The sftp, ftp and ftps sources against real servers (tests/fileservers.py): one suite over
every kind, then what only one of them does (host keys, private keys, TLS session reuse)."""

from __future__ import annotations

import ftplib
import json
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from poller.config.sources import FtpSource, SftpSource
from poller.sources import Source, SourceError, open_source
from poller.sources.base import FileInfo
from tests.fileservers import (
    HOST,
    SSHD,
    VSFTPD,
    LocalUser,
    PyFtpServer,
    SshServer,
    Vsftpd,
    free_port,
    local_user,
    make_key,
    require,
    require_root,
    silent_server,
    write_tree,
)
from tests.kafkabroker import Topics
from tests.workerproc import MakeWorker

FOLDER = "in"
"""Where the tree is, relative to the login folder."""


@pytest.fixture(scope="module")
def user() -> Iterator[LocalUser]:
    require_root()
    with local_user() as account:
        yield account


@pytest.fixture(scope="module")
def user_tree(user: LocalUser) -> list[FileInfo]:
    folder = user.home / FOLDER
    folder.mkdir()
    return write_tree(folder, owner=user.name)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory, user: LocalUser) -> Iterator[SshServer]:
    require(SSHD, "openssh-server")
    folder = tmp_path_factory.mktemp("sshd")
    server = SshServer(folder, user)
    server.start(make_key(folder / "host_key"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vsftpd(tmp_path_factory: pytest.TempPathFactory, user: LocalUser) -> Iterator[Vsftpd]:
    require(VSFTPD, "vsftpd")
    server = Vsftpd(tmp_path_factory.mktemp("vsftpd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ftp_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[FileInfo]]:
    """pyftpdlib's folder, with the tree in FOLDER, and the tree's listing."""
    root = tmp_path_factory.mktemp("pyftpd")
    (root / FOLDER).mkdir()
    return root, write_tree(root / FOLDER)


@pytest.fixture(scope="module")
def pyftpds(ftp_root: tuple[Path, list[FileInfo]]) -> Iterator[dict[bool, PyFtpServer]]:
    """pyftpdlib with MLSD (True) and without (False), over one tree."""
    root = ftp_root[0]
    with (
        PyFtpServer(root, "lister", "ftp-secret-1", has_mlsd=True) as with_mlsd,
        PyFtpServer(root, "lister", "ftp-secret-1", has_mlsd=False) as without_mlsd,
    ):
        yield {True: with_mlsd, False: without_mlsd}


@dataclass
class Remote:
    """One server of the suite: `config(...)` builds a source config for it, with overrides."""

    kind: str
    settings: dict[str, Any]
    expected: list[FileInfo]
    password: str
    login_folder: str
    """Where a login starts, absolute ("" for /)."""

    def config(self, **overrides: Any) -> SftpSource | FtpSource:
        values = {**self.settings, "path": FOLDER, **overrides}
        model = SftpSource if values["source_type"] == "sftp" else FtpSource
        return model.model_validate(values)

    def open(self, **overrides: Any) -> Source:
        return open_source(self.config(**overrides), {})


@pytest.fixture(params=["sftp", "ftp-mlsd", "ftp-without-mlsd", "ftps"])
def remote(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Remote:
    """Every kind of remote source: sftp on sshd, ftp on pyftpdlib (with and without MLSD),
    ftps on vsftpd."""
    kind = request.param.partition("-")[0]
    if kind == "ftp":
        server = request.getfixturevalue("pyftpds")[request.param == "ftp-mlsd"]
        expected = request.getfixturevalue("ftp_root")[1]
        settings = {"source_type": "ftp", "host": HOST, "port": server.port}
        settings |= {"username": "lister", "password": "ftp-secret-1"}
        return Remote(kind, settings, expected, "ftp-secret-1", login_folder="")
    user: LocalUser = request.getfixturevalue("user")
    expected = request.getfixturevalue("user_tree")
    settings = {"host": HOST, "username": user.name, "password": user.password}
    if kind == "sftp":
        sshd: SshServer = request.getfixturevalue("sshd")
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(sshd.known_hosts_line())
        settings |= {"source_type": "sftp", "port": sshd.port, "known_hosts_path": str(known_hosts)}
    else:
        vsftpd: Vsftpd = request.getfixturevalue("vsftpd")
        monkeypatch.setenv("SSL_CERT_FILE", str(vsftpd.cert))
        settings |= {"source_type": "ftps", "port": vsftpd.port}
    return Remote(kind, settings, expected, user.password, login_folder=str(user.home))


@pytest.fixture
def opened() -> Iterator[Callable[[Source], Source]]:
    """Sources a test opens, closed after it."""
    sources: list[Source] = []

    def opened(source: Source) -> Source:
        sources.append(source)
        return source

    yield opened
    for source in sources:
        source.close()


def test_lists_the_tree_with_sizes_and_times(
    remote: Remote, opened: Callable[[Source], Source]
) -> None:
    source = opened(remote.open())
    assert list(source.files(recursive=True)) == remote.expected
    assert list(source.files(recursive=True)) == remote.expected  # again, on the same connection


def test_lists_only_the_folder_itself_unless_recursive(
    remote: Remote, opened: Callable[[Source], Source]
) -> None:
    source = opened(remote.open())
    top = [file for file in remote.expected if "/" not in file.path]
    assert [file.path for file in top] == ["a.csv", "b.txt", "with space.csv"]
    assert list(source.files(recursive=False)) == top


def test_an_absolute_folder_and_the_identity(
    remote: Remote, opened: Callable[[Source], Source]
) -> None:
    source = opened(remote.open())
    port, user = remote.settings["port"], remote.settings["username"]
    assert source.identity == f"{remote.kind}://{user}@{HOST}:{port}/~/{FOLDER}"
    login_folder = remote.login_folder
    absolute = opened(remote.open(path=f"{login_folder}/{FOLDER}/sub"))
    assert absolute.identity == f"{remote.kind}://{user}@{HOST}:{port}{login_folder}/{FOLDER}/sub"
    assert [file.path for file in absolute.files(recursive=True)] == ["c.csv", "deeper/d.csv"]


def test_close_is_safe_twice(remote: Remote) -> None:
    source = remote.open()
    source.close()
    source.close()


def test_a_wrong_password_is_refused_without_showing_it(remote: Remote) -> None:
    wrong = "Wrong-Password-42"
    with pytest.raises(SourceError, match=r"authentication failed|login refused") as raised:
        remote.open(password=wrong)
    assert wrong not in str(raised.value)
    assert remote.password not in str(raised.value)
    assert not raised.value.is_retryable


def test_a_refused_port_is_worth_trying_again(remote: Remote) -> None:
    with pytest.raises(
        SourceError, match=r"could not connect \(ConnectionRefusedError\)"
    ) as raised:
        remote.open(port=free_port())
    assert raised.value.is_retryable
    assert remote.password not in str(raised.value)


def test_a_silent_server_times_out(remote: Remote) -> None:
    with (
        silent_server() as port,
        pytest.raises(SourceError, match=r"timed out after 0.3 s") as raised,
    ):
        remote.open(port=port, timeout_seconds=0.3)
    assert raised.value.is_retryable


def test_a_missing_folder_is_not_worth_trying_again(
    remote: Remote, opened: Callable[[Source], Source]
) -> None:
    source = opened(remote.open(path="/no/such/folder"))
    with pytest.raises(SourceError, match=r"no such folder: /no/such/folder$") as raised:
        list(source.files(recursive=True))
    assert not raised.value.is_retryable


# sftp: host keys


@pytest.fixture
def sftp_settings(sshd: SshServer, user: LocalUser, tmp_path: Path) -> dict[str, Any]:
    return {
        "source_type": "sftp",
        "host": HOST,
        "port": sshd.port,
        "username": user.name,
        "password": user.password,
        "path": FOLDER,
        "known_hosts_path": str(tmp_path / "ssh" / "known_hosts"),
    }


def open_sftp(settings: dict[str, Any], **overrides: Any) -> Source:
    return open_source(SftpSource.model_validate({**settings, **overrides}), {})


def test_an_unknown_host_key_is_refused_by_reject(
    sftp_settings: dict[str, Any], sshd: SshServer
) -> None:
    known_hosts = Path(sftp_settings["known_hosts_path"])
    for _ in ("missing", "empty"):
        with pytest.raises(
            SourceError, match=rf"host key for \[{HOST}\]:{sshd.port} not in .*known_hosts"
        ) as raised:
            open_sftp(sftp_settings, host_key_policy="reject")
        assert not raised.value.is_retryable
        known_hosts.parent.mkdir(exist_ok=True)
        known_hosts.touch()
    assert known_hosts.read_text() == ""


def test_accept_new_trusts_and_saves_a_new_key_then_refuses_a_changed_one(
    sftp_settings: dict[str, Any], user: LocalUser, tmp_path: Path, user_tree: list[FileInfo]
) -> None:
    server = SshServer(tmp_path, user)
    server.start(make_key(tmp_path / "first_key"))
    settings = {**sftp_settings, "port": server.port}
    known_hosts = Path(settings["known_hosts_path"])
    try:
        source = open_sftp(settings, host_key_policy="accept-new")
        assert list(source.files(recursive=True)) == user_tree
        source.close()
        assert known_hosts.read_text() == server.known_hosts_line()
        assert known_hosts.stat().st_mode & 0o777 == 0o600
        open_sftp(settings, host_key_policy="reject").close()  # now a known host
        saved = known_hosts.read_text()

        server.stop()
        server.start(make_key(tmp_path / "second_key", kind="ecdsa"))
        for policy in ("accept-new", "reject"):
            with pytest.raises(
                SourceError, match=rf"host key for \[{HOST}\]:{server.port} changed"
            ) as raised:
                open_sftp(settings, host_key_policy=policy)
            assert not raised.value.is_retryable
        assert known_hosts.read_text() == saved
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("kind", "passphrase"),
    [("ed25519", "key-phrase-1"), ("ecdsa", ""), ("rsa", "key-phrase-2")],
    ids=["ed25519-with-passphrase", "ecdsa", "rsa-with-passphrase"],
)
def test_logs_in_with_a_private_key(
    sftp_settings: dict[str, Any],
    sshd: SshServer,
    tmp_path: Path,
    user_tree: list[FileInfo],
    kind: str,
    passphrase: str,
) -> None:
    key = make_key(tmp_path / f"id_{kind}", kind=kind, passphrase=passphrase)
    sshd.authorize(Path(f"{key}.pub"))
    Path(sftp_settings["known_hosts_path"]).parent.mkdir()
    Path(sftp_settings["known_hosts_path"]).write_text(sshd.known_hosts_line())
    settings = {**sftp_settings, "password": None, "private_key_path": str(key)}
    source = open_sftp(settings, passphrase=passphrase or None)
    assert list(source.files(recursive=False)) == [f for f in user_tree if "/" not in f.path]
    source.close()
    if passphrase:
        with pytest.raises(SourceError, match="is encrypted: set passphrase"):
            open_sftp(settings)
        with pytest.raises(SourceError, match=r"could not load private key .*wrong passphrase"):
            open_sftp(settings, passphrase="not-it")


def test_a_key_the_server_does_not_know_is_refused(
    sftp_settings: dict[str, Any], sshd: SshServer, tmp_path: Path
) -> None:
    Path(sftp_settings["known_hosts_path"]).parent.mkdir()
    Path(sftp_settings["known_hosts_path"]).write_text(sshd.known_hosts_line())
    stranger = make_key(tmp_path / "stranger")
    with pytest.raises(SourceError, match=r"^sftp://.*: authentication failed$"):
        open_sftp(sftp_settings, password=None, private_key_path=str(stranger))
    with pytest.raises(SourceError, match="no private key at"):
        open_sftp(sftp_settings, password=None, private_key_path=str(tmp_path / "nothing"))


# ftp and ftps


@pytest.mark.parametrize("has_mlsd", [True, False], ids=["mlsd", "without-mlsd"])
def test_lists_with_mlsd_or_else_with_nlst_size_and_mdtm(
    pyftpds: dict[bool, PyFtpServer], ftp_root: tuple[Path, list[FileInfo]], has_mlsd: bool
) -> None:
    server, expected = pyftpds[has_mlsd], ftp_root[1]
    config = FtpSource.model_validate(
        {"source_type": "ftp", "host": HOST, "port": server.port, "username": "lister",
         "password": "ftp-secret-1", "path": FOLDER}
    )  # fmt: skip
    source = open_source(config, {})
    del server.commands[:]
    assert list(source.files(recursive=True)) == expected
    source.close()
    listed_with = {"MLSD"} if has_mlsd else {"NLST", "SIZE", "MDTM"}
    assert listed_with <= set(server.commands)
    assert ("SIZE" in server.commands) is not has_mlsd


def test_ftps_resumes_the_tls_session_on_the_data_channel(
    vsftpd: Vsftpd, user: LocalUser, user_tree: list[FileInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(vsftpd.cert))
    plain = ftplib.FTP_TLS(context=ssl.create_default_context(), timeout=5)
    plain.connect(HOST, vsftpd.port)
    plain.login(user.name, user.password)
    plain.prot_p()
    with pytest.raises(
        ftplib.error_perm, match="522 SSL connection failed: session reuse required"
    ):
        plain.nlst(FOLDER)
    plain.close()

    config = FtpSource.model_validate(
        {"source_type": "ftps", "host": HOST, "port": vsftpd.port, "username": user.name,
         "password": user.password, "path": FOLDER}
    )  # fmt: skip
    source = open_source(config, {})
    assert list(source.files(recursive=True)) == user_tree
    source.close()


def test_ftps_refuses_a_certificate_it_does_not_trust(
    vsftpd: Vsftpd, user: LocalUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    config = FtpSource.model_validate(
        {"source_type": "ftps", "host": HOST, "port": vsftpd.port, "username": user.name,
         "password": user.password}
    )  # fmt: skip
    with pytest.raises(SourceError, match="TLS certificate not trusted") as raised:
        open_source(config, {})
    assert not raised.value.is_retryable


def test_plain_ftp_to_a_server_that_requires_tls_is_refused(
    vsftpd: Vsftpd, user: LocalUser
) -> None:
    config = FtpSource.model_validate(
        {"source_type": "ftp", "host": HOST, "port": vsftpd.port, "username": user.name,
         "password": user.password}
    )  # fmt: skip
    with pytest.raises(SourceError, match=r"login refused \(530 .*encryption") as raised:
        open_source(config, {})
    assert user.password not in str(raised.value)


# --- through a real worker: a polling job in, one event per file out -------------------


def test_a_worker_lists_every_remote_source_and_publishes_one_event_per_file(
    remote: Remote, workers: MakeWorker, topics: Topics
) -> None:
    """End to end (SPEC §10): the job names the password as ${SOURCE_PASSWORD}, which the
    worker fills from its own environment; no event, log line or metric carries it."""
    worker = workers(env={"SOURCE_PASSWORD": remote.password})
    source = {**remote.settings, "path": FOLDER, "password": "${SOURCE_PASSWORD}"}
    job = {"job_id": f"{remote.kind}-job", "source_config": source, "file_pattern": "**/*"}
    topics.produce(topics.polling, job)
    events = topics.read(topics.events, len(remote.expected), timeout=30)
    worker.wait_log(f"published {len(remote.expected)} event(s)")
    got = sorted((e["value"]["path"], e["value"]["size"]) for e in events)
    assert got == sorted((f.path, f.size) for f in remote.expected)
    assert {e["value"]["source_type"] for e in events} == {remote.settings["source_type"]}
    shown = json.dumps(events) + worker.log() + worker.metrics()
    assert remote.password not in shown
    assert f'poller_files_published_total{{source_type="{remote.settings["source_type"]}"}}' in (
        worker.metrics()
    )
    # The same source with a wrong password is another login, not the open connection.
    wrong = {**job, "source_config": {**source, "password": "not-the-password"}}
    topics.produce(topics.polling, wrong)
    [letter] = topics.read(topics.dlq, 1, timeout=30)
    reason = letter["value"]["reason"]
    assert letter["value"]["origin"]["offset"] == 1
    assert "authentication failed" in reason or "login refused" in reason, reason
