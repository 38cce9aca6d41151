"""A real PostgreSQL server for the store tests: a throwaway cluster made with `initdb` in a
temp folder and started with `pg_ctl` on a free port, as a non-root user (PostgreSQL refuses
to run as root; under root the cluster runs as `nobody`). Debian's `postgresql` package
provides the binaries (.ci/run installs it); without them the tests that need the cluster
are skipped, but failed in CI.

One cluster serves the whole test session; each test gets a database of its own
(`pg_url`), reached over TCP with a password, as a deployment is: the URL the tests put in
config.json says `${POLLER_TEST_PGPASSWORD}`, never the password itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.kafkabroker import free_port

ROLE = "poller"
PASSWORD = "pg-secret-" + uuid.uuid4().hex[:12]
PASSWORD_ENV = "POLLER_TEST_PGPASSWORD"
"""The environment variable that carries PASSWORD into the configs the tests write."""


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[4])
    )
    return str(candidates[-1]) if candidates else None


@dataclass
class Cluster:
    folder: Path
    port: int
    user: str | None  # who runs the server (None: this process's user)

    @property
    def admin_dsn(self) -> str:
        """The superuser, over the cluster's own socket folder (trusted)."""
        return f"host={self.folder / 'sock'} port={self.port} user=postgres dbname=postgres"

    def url(self, database: str, password: str = "${" + PASSWORD_ENV + "}") -> str:
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), user=self.user, capture_output=True, text=True, check=True, timeout=60
        )

    def start(self) -> None:
        pg_ctl = pg_bin("pg_ctl")
        assert pg_ctl is not None
        options = (
            f"-p {self.port} -k {self.folder / 'sock'} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self.run(
            pg_ctl,
            "-D",
            str(self.folder / "data"),
            "-o",
            options,
            "-l",
            str(self.folder / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Stop at once, as a crash would (clients see their connections drop)."""
        pg_ctl = pg_bin("pg_ctl")
        assert pg_ctl is not None
        subprocess.run(
            [pg_ctl, "-D", str(self.folder / "data"), "-m", "immediate", "stop"],
            user=self.user,
            capture_output=True,
            timeout=60,
        )


def start_cluster() -> Cluster:
    """initdb, then pg_ctl start on a free port; returns once it accepts connections."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        reason = "PostgreSQL's server binaries are not installed (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    user = "nobody" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="poller-pg-"))
    (folder / "sock").mkdir()
    if user is not None:
        for path in (folder, folder / "sock"):
            shutil.chown(path, user)
    cluster = Cluster(folder, free_port(), user)
    cluster.run(
        initdb,
        "-D",
        str(folder / "data"),
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--no-sync",
        "-E",
        "UTF8",
    )
    cluster.start()
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
    return cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = start_cluster()
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database's URL with the password filled in (for code that takes a URL);
    the environment also carries the password, for configs that say ${POLLER_TEST_PGPASSWORD}."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    return pg_cluster.url(pg_cluster.new_database(), PASSWORD)
