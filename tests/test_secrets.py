"""No secret leaves Poller: a platform that echoes every header it is sent, run through the real
daemon, `app.py run` and `history`; then grep every output, stored file and log for each
configured and run-time secret (passwords, keys, the Basic base64, bearer tokens, cookies)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lookup import PlatformClient
from poller.config.environments import Environment
from poller.redaction import MASK
from tests.apiproc import API_KEY, api_settings, start_api_daemon
from tests.daemonproc import DaemonProcess, run_app, tick_job, wait_until
from tests.platform import PlatformServer, reply

PASSWORD = "platform-password-31"  # the stand-in platform's
PLATFORM_KEY = "platform-api-key-73"
SECRETS = {
    "PLATFORM_PW": PASSWORD,
    "PLATFORM_KEY": PLATFORM_KEY,
    "ENV_HEADER": "env-header-value-5a1",
    "URL_PW": "url-password-77c",
    "QUERY_TOKEN": "query-token-e41",
    "ENTRY_HEADER": "entry-header-0f9",
}
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


def secret_config(platform: PlatformServer) -> dict[str, Any]:
    def environment(auth: dict[str, Any]) -> dict[str, Any]:
        return {
            "base_url": platform.url,
            "retries": 0,
            "auth": auth,
            "headers": {"X-Tenant": "${ENV_HEADER}"},
        }

    login = {"login_path": "/login", "username": "alice", "password": "${PLATFORM_PW}"}
    bearer = {**login, "login_path": "/auth/token"}
    host = platform.url.removeprefix("http://")
    echo_url = f"http://svc:${{URL_PW}}@{host}/echo?token=${{QUERY_TOKEN}}&page=1"
    jobs = [
        {"id": kind, "every": "1h", "environment": kind, "integrationIDs": [["echo1"]]}
        for kind in ("session", "bearer", "basic", "key")
    ]
    jobs.append(
        {
            "id": "plain",
            "every": "1h",
            "integrationIDs": [
                [{"http": {"url": echo_url, "headers": {"X-Auth-Token": "${ENTRY_HEADER}"}}}]
            ],
        }
    )
    return {
        "settings": {"api": api_settings()},
        "environments": {
            "session": environment({"type": "session", **login}),
            "bearer": environment({"type": "bearer", **bearer}),
            "basic": environment(
                {"type": "basic", "username": "alice", "password": "${PLATFORM_PW}"}
            ),
            "key": environment(
                {"type": "api_key", "header": "X-API-Key", "value": "${PLATFORM_KEY}"}
            ),
        },
        "jobs": jobs,
    }


def leaks(texts: dict[str, str], secrets: set[str]) -> list[tuple[str, str]]:
    return [(where, s) for where, text in texts.items() for s in secrets if s in text]


def stored_files(folder: Path) -> dict[str, str]:
    files = [*(folder / "data").iterdir(), *(folder / "logs").iterdir()]
    return {str(p): p.read_bytes().decode("latin-1") for p in files if p.is_file()}


def test_no_configured_or_run_time_secret_reaches_any_output(tmp_path: Path) -> None:
    with PlatformServer(echo_headers=True) as platform:
        api = start_api_daemon(tmp_path, secret_config(platform), **SECRETS)
        try:
            texts: dict[str, str] = {}
            for job_id in ("session", "bearer", "basic", "key", "plain"):
                answer = api.post(f"/jobs/{job_id}/trigger", params={"wait": "true"})
                assert answer.status_code == 200, answer.text
                run = answer.json()["run"]
                assert run["status"] == "success", run
                texts[f"trigger {job_id}"] = answer.text
                texts[f"/runs {job_id}"] = api.get(f"/runs/{run['run_id']}").text
                texts[f"/jobs/{job_id}"] = api.get(f"/jobs/{job_id}").text
                texts[f"/jobs/{job_id}/runs"] = api.get(f"/jobs/{job_id}/runs").text
            # The platform did echo the credentials: what the record shows is their mask.
            echoed = json.loads(texts["/runs key"])["output"]["headers"]
            assert echoed["X-API-Key"] == MASK and echoed["X-Tenant"] == MASK
            assert json.loads(texts["/runs basic"])["output"]["headers"]["Authorization"] == MASK
            assert json.loads(texts["/runs session"])["output"]["headers"]["Cookie"] == MASK
            plain = json.loads(texts["/runs plain"])
            assert plain["output"]["query"] == {"token": MASK, "page": "1"}
            assert plain["steps"][0]["id"] == f"http:GET http://{MASK}@{platform.url[7:]}/echo"
            for path in ("/logs?lines=1000", "/status", "/jobs", "/metrics"):
                texts[path] = api.get(path).text
        finally:
            api.daemon.stop()
        env = {**SECRETS, "POLLER_API_KEY": API_KEY}
        for command in (["run", "bearer"], ["run", "plain"], ["history", "--json"], ["history"]):
            done = run_app(tmp_path, *command, env={**api.daemon.env, **env})
            assert done.returncode == 0, done.stderr
            texts[" ".join(command)] = done.stdout + done.stderr
        texts.update(stored_files(tmp_path))
        issued = platform.issued()
    assert len(issued) >= 3  # a session and two bearer tokens were handed out and echoed
    secrets = {*SECRETS.values(), API_KEY, BASIC, *issued}
    assert leaks(texts, secrets) == []


def test_a_redirect_to_another_host_carries_no_credential() -> None:
    with PlatformServer() as home, PlatformServer(host="127.0.0.2") as elsewhere:
        environment = Environment.model_validate(
            {
                "base_url": home.url,
                "retries": 0,
                "auth": {"type": "api_key", "header": "X-API-Key", "value": PLATFORM_KEY},
                "headers": {"X-Tenant": "tenant-secret"},
            }
        )
        client = PlatformClient("live", environment)
        target = elsewhere.url + "/integrations/moved/execute"
        home.script("moved", reply(307, {}, headers={"Location": target}))
        home.script("here", reply(307, {}, headers={"Location": "/integrations/moved/execute"}))
        try:
            client.execute("moved", {"a": 1}, request_id="r1")
            client.execute("here", {"a": 1}, request_id="r2")
        finally:
            client.close()
        away = elsewhere.calls("moved")[0].headers
        kept = home.calls("moved")[-1].headers
    assert "X-API-Key" not in away and "X-Tenant" not in away and "Cookie" not in away
    assert away["X-Request-ID"] == "r1"  # the request itself still goes
    assert kept["X-API-Key"] == PLATFORM_KEY and kept["X-Tenant"] == "tenant-secret"


def run_check(folder: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    (folder / "config.json").write_text(json.dumps(config))
    return run_app(folder, "check")


def test_config_errors_mask_credentials_in_the_values_they_show(tmp_path: Path) -> None:
    config = {
        "environments": {
            "x": {
                "base_url": "ftp://svc:Secret-in-url@host/x",
                "auth": {"type": "basic", "username": "u", "password": 12345678},
                "headers": {"X-Key": ["header-secret"]},
            }
        },
        "jobs": [tick_job("a", every="1h")],
    }
    done = run_check(tmp_path, config)
    assert done.returncode == 1
    assert f'environments.x.base_url: "ftp://{MASK}@host/x" is not valid' in done.stdout
    assert f"environments.x.auth.password: {MASK} is not valid" in done.stdout
    for secret in ("Secret-in-url", "12345678", "header-secret"):
        assert secret not in done.stdout


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (
            "postgresql://poller:pg-Secret-9@db/poller",
            "config.json:1:2: settings: timezone is required when state_db is a postgresql:// "
            "URL: daemons on several machines must compute the same fire times",
        ),
        (
            "sqlite://x.db",
            "config.json:1:15: settings.state_db: "
            '"sqlite://x.db" is not valid; a sqlite:// URL is not a state store Poller supports',
        ),
    ],
)
def test_a_state_db_url_is_a_located_error_and_creates_nothing(
    tmp_path: Path, url: str, error: str
) -> None:
    done = run_check(tmp_path, {"settings": {"state_db": url}, "jobs": []})
    assert done.returncode == 1
    assert error in done.stdout
    assert "pg-Secret-9" not in done.stdout
    daemon = run_app(tmp_path)
    assert daemon.returncode == 2 and "pg-Secret-9" not in daemon.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_state_files_are_private_and_logs_group_readable(tmp_path: Path) -> None:
    config = {"settings": {"api": api_settings(key=None)}, "jobs": [tick_job("t", every="1s")]}
    (tmp_path / "steps.py").write_text("def tick(data, context):\n    return {}\n")
    daemon = DaemonProcess(tmp_path, config)
    daemon.start()
    try:
        daemon.wait_runs("t", 1)
        data = tmp_path / "data"
        wait_until(lambda: (data / "poller.db-wal").exists(), what="the history's WAL file")
        modes = {p.name: p.stat().st_mode & 0o777 for p in data.iterdir()}
    finally:
        daemon.stop()
    assert {"poller.db", "poller.db-wal", "poller.db.fires", "poller.db.api-key"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes
    assert (tmp_path / "logs" / "logfile.log").stat().st_mode & 0o777 == 0o640
