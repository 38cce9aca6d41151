"""The platform client against the stand-in platform: auth, retries, request ids, secrets."""

from __future__ import annotations

import json
import logging
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from lookup import ClientPool, PlatformClient, http_call
from poller.clock import SystemClock
from poller.config.environments import Environment
from poller.errors import CallError
from poller.redaction import Redactor
from poller.run.transport import excerpt
from tests.conftest import FakeClock
from tests.platform import (
    Behaviour,
    PlatformServer,
    always,
    drop,
    expire,
    fail,
    http_date,
    invalid_json,
    rate_limited,
    reply,
    slow,
)

PASSWORD = "platform-password-31"
API_KEY = "platform-api-key-73"
AUTHS: dict[str, dict[str, Any]] = {
    "none": {"type": "none"},
    "session": {
        "type": "session",
        "login_path": "/login",
        "username": "alice",
        "password": PASSWORD,
    },
    "bearer": {
        "type": "bearer",
        "login_path": "/auth/token",
        "username": "alice",
        "password": PASSWORD,
        "ttl_seconds": 100,
    },
    "api_key": {"type": "api_key", "header": "X-API-Key", "value": API_KEY},
    "basic": {"type": "basic", "username": "alice", "password": PASSWORD},
}
MakeClient = Callable[..., PlatformClient]


@pytest.fixture
def make_client(platform: PlatformServer, fake_clock: FakeClock) -> Iterator[MakeClient]:
    """Build clients on the platform (auth by name, fields over fast defaults); closes them."""
    clients: list[PlatformClient] = []

    def build(auth: str | dict[str, Any] = "none", **fields: Any) -> PlatformClient:
        settings = AUTHS[auth] if isinstance(auth, str) else auth
        data = {"base_url": platform.url, "auth": settings, "timeout_seconds": 2.0, **fields}
        client = PlatformClient(
            "live", Environment.model_validate(data), fake_clock, random.Random(7)
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def test_execute_posts_the_payload_with_request_id_and_headers(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    client = make_client(headers={"X-Tenant": "acme"})
    result = client.execute("66c6eb17b4d36", {"a": 1}, request_id="req-1")
    assert result.output == {"integration_id": "66c6eb17b4d36", "input": {"a": 1}, "count": 1}
    assert (result.attempts, result.status) == (1, 200)
    [sent] = platform.requests
    assert (sent.method, sent.path) == ("POST", "/integrations/66c6eb17b4d36/execute")
    assert sent.headers["X-Request-ID"] == sent.headers["Idempotency-Key"] == "req-1"
    assert sent.headers["X-Tenant"] == "acme"


def test_execute_uses_the_configured_method_and_path(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.serve_json("/json/run/a%2Fb", {"ok": True})
    client = make_client(execute={"method": "get", "path": "/json/run/{integration_id}"})
    assert client.execute("a/b", {}, request_id="r").output == {"ok": True}
    assert platform.requests[0].method == "GET"


@pytest.mark.parametrize("auth", list(AUTHS), ids=list(AUTHS))
def test_every_auth_type_is_accepted_and_logs_in_once(
    platform: PlatformServer, make_client: MakeClient, auth: str
) -> None:
    platform.require_auth = auth != "none"
    client = make_client(auth)
    for n in range(3):
        assert client.execute("i1", {"n": n}, request_id=f"r{n}").output["count"] == n + 1
    assert len(platform.logins()) == (1 if auth in ("session", "bearer") else 0)
    assert len({r.peer_port for r in platform.calls("i1")}) == 1  # one kept-alive connection


def test_output_of_other_json_values_and_empty_bodies(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.script("i1", reply(200, [1, 2]), Behaviour(status=204, raw_body=b""))
    client = make_client()
    assert client.execute("i1", {}, request_id="r1").output == {"data": [1, 2]}
    assert client.execute("i1", {}, request_id="r2").output == {}


def test_retries_keep_one_request_id_and_back_off(
    platform: PlatformServer, make_client: MakeClient, fake_clock: FakeClock
) -> None:
    platform.script("flaky", fail(times=2))
    client = make_client(retries=3, backoff_seconds=1.0)
    result = client.execute("flaky", {}, request_id="req-7")
    assert (result.attempts, result.output["count"]) == (3, 3)
    sent = platform.calls("flaky")
    assert {r.headers["X-Request-ID"] for r in sent} == {"req-7"}
    assert {r.headers["Idempotency-Key"] for r in sent} == {"req-7"}
    first, second = fake_clock.waits
    assert 0.5 <= first <= 1.0 <= second <= 2.0


def test_each_logical_call_gets_its_own_request_id(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    client = make_client()
    client.execute("i1", {}, request_id="a")
    client.execute("i1", {}, request_id="b")
    assert [r.headers["X-Request-ID"] for r in platform.requests] == ["a", "b"]


BOUNDS = [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (5.0, 5.0)]  # before the 5 s cap


def test_backoff_doubles_up_to_the_cap_then_gives_up(
    platform: PlatformServer, make_client: MakeClient, fake_clock: FakeClock
) -> None:
    platform.script("down", always(503, {"error": "maintenance"}))
    client = make_client(retries=5, backoff_seconds=1.0, backoff_max_seconds=5.0)
    with pytest.raises(
        CallError,
        match=r"^live: down at 127\.0\.0\.1:\d+ failed after 6 attempts: "
        r"HTTP 503 \(Service Unavailable\)",
    ) as caught:
        client.execute("down", {}, request_id="r")
    error = caught.value
    assert (error.environment, error.integration_id, error.status, error.attempts) == (
        "live",
        "down",
        503,
        6,
    )
    assert error.body_excerpt == '{"error": "maintenance"}'
    waits = fake_clock.waits
    assert len(waits) == 5
    assert waits == sorted(waits)
    assert all(low <= w <= min(high, 5.0) for w, (low, high) in zip(waits, BOUNDS, strict=True))


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422], ids=str)
def test_other_4xx_fail_at_once(
    platform: PlatformServer, make_client: MakeClient, fake_clock: FakeClock, status: int
) -> None:
    platform.script("bad", reply(status, {"error": "no"}))
    with pytest.raises(
        CallError, match=rf"^live: bad at 127\.0\.0\.1:\d+ failed after 1 attempt: HTTP {status} "
    ):
        make_client(retries=3).execute("bad", {}, request_id="r")
    assert fake_clock.waits == []


def test_401_without_a_login_fails_at_once(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.require_auth = True
    with pytest.raises(CallError, match=r"after 1 attempt: HTTP 401 \(Unauthorized\)"):
        make_client("none").execute("i1", {}, request_id="r")


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("date", 7.0), ("120", 10.0), ("past", 0.0)],
    ids=["seconds", "http-date", "capped", "date-in-the-past"],
)
def test_retry_after_is_honoured_and_capped(
    platform: PlatformServer,
    make_client: MakeClient,
    fake_clock: FakeClock,
    header: str,
    expected: float,
) -> None:
    dates = {"date": http_date(7, fake_clock.now()), "past": http_date(-60, fake_clock.now())}
    platform.script("busy", rate_limited(dates.get(header, header)))
    client = make_client(retries=2, backoff_seconds=1.0, backoff_max_seconds=10.0)
    assert client.execute("busy", {}, request_id="r").attempts == 2
    assert fake_clock.waits == [expected]


def test_no_retry_wait_reaches_past_the_deadline(
    platform: PlatformServer, make_client: MakeClient, fake_clock: FakeClock
) -> None:
    platform.script("busy", rate_limited("5"))
    client = make_client(retries=3)
    with pytest.raises(CallError, match=r"HTTP 429 \(.*the run timeout leaves no time to retry"):
        client.execute("busy", {}, request_id="r", deadline=time.monotonic() + 2)
    assert fake_clock.waits == []


def test_no_attempt_starts_after_the_deadline(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    with pytest.raises(
        CallError,
        match=r"^live: i1 at 127\.0\.0\.1:\d+ failed after 0 attempts: run timeout reached$",
    ):
        make_client().execute("i1", {}, request_id="r", deadline=time.monotonic() - 1)
    assert platform.requests == []


def test_the_deadline_shortens_the_timeout(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.script("slow", slow(3))
    started = time.monotonic()
    with pytest.raises(
        CallError, match=r"timed out after 0\.3 s; the run timeout leaves no time to retry"
    ):
        make_client(timeout_seconds=5).execute(
            "slow", {}, request_id="r", deadline=time.monotonic() + 0.3
        )
    assert time.monotonic() - started < 2


def test_slow_answers_time_out_and_are_retried(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.script("slow", slow(2, times=2))
    with pytest.raises(
        CallError,
        match=r"^live: slow at 127\.0\.0\.1:\d+ failed after 2 attempts: timed out after 0.2 s",
    ):
        make_client(timeout_seconds=0.2, retries=1).execute("slow", {}, request_id="r")
    assert len(platform.calls("slow")) == 2


def test_invalid_json_fails_without_retry(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.script("broken", invalid_json())
    with pytest.raises(CallError, match=r'after 1 attempt: HTTP 200 \(invalid JSON\): \{"broken":'):
        make_client(retries=3).execute("broken", {}, request_id="r")


@pytest.mark.parametrize("before_headers", [False, True], ids=["mid-body", "before-headers"])
def test_a_dropped_connection_is_retried(
    platform: PlatformServer, make_client: MakeClient, before_headers: bool
) -> None:
    platform.script("i1", drop(before_headers=before_headers))
    result = make_client(retries=1).execute("i1", {"x": 1}, request_id="r")
    assert (result.attempts, result.output["input"]) == (2, {"x": 1})


def test_refused_connections_are_retried_then_reported(fake_clock: FakeClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = Environment(base_url=f"http://127.0.0.1:{port}", retries=2, timeout_seconds=1)
    client = PlatformClient("live", environment, fake_clock)
    with pytest.raises(CallError, match=r"after 3 attempts: connection failed \(") as caught:
        client.execute("i1", {}, request_id="r")
    assert caught.value.status is None
    assert not isinstance(caught.value.__cause__, requests.RequestException)


@pytest.mark.parametrize("auth", ["session", "bearer"], ids=["session", "bearer"])
def test_a_401_logs_in_again_once_and_repeats_the_call(
    platform: PlatformServer, make_client: MakeClient, fake_clock: FakeClock, auth: str
) -> None:
    platform.require_auth = True
    client = make_client(auth, retries=0)
    client.execute("i1", {}, request_id="r1")
    platform.script("i1", expire())
    result = client.execute("i1", {"n": 2}, request_id="r2")
    assert (result.attempts, result.output["input"]) == (2, {"n": 2})
    assert len(platform.logins()) == 2
    assert [r.headers["X-Request-ID"] for r in platform.calls("i1")[1:]] == ["r2", "r2"]
    assert fake_clock.waits == []


@pytest.mark.parametrize("auth", ["session", "bearer"], ids=["session", "bearer"])
def test_a_second_401_fails(platform: PlatformServer, make_client: MakeClient, auth: str) -> None:
    platform.script("i1", reply(401, {"error": "denied"}, times=2))
    with pytest.raises(
        CallError,
        match=r"after 2 attempts: HTTP 401 \(Unauthorized; still unauthorized after logging",
    ):
        make_client(auth, retries=3).execute("i1", {}, request_id="r")
    assert len(platform.logins()) == 2


@pytest.mark.parametrize(
    ("auth", "login_path"),
    [("session", "/login"), ("bearer", "/auth/token")],
    ids=["session", "bearer"],
)
def test_a_rejected_login_fails_without_retry(
    platform: PlatformServer, make_client: MakeClient, auth: str, login_path: str
) -> None:
    platform.password = "changed-on-the-server"
    with pytest.raises(
        CallError, match=rf"after 1 attempt: HTTP 401 \(login at {login_path} failed: Unauth"
    ) as caught:
        make_client(auth, retries=3).execute("i1", {}, request_id="r")
    assert PASSWORD not in str(caught.value)
    assert platform.calls("i1") == []


def test_a_failing_login_is_retried_like_a_call(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.script("/auth/token", fail(times=1))
    assert make_client("bearer", retries=1).execute("i1", {}, request_id="r").attempts == 2


def test_the_bearer_token_is_refreshed_before_its_ttl_runs_out(
    platform: PlatformServer, make_client: MakeClient, fake_clock: FakeClock
) -> None:
    client = make_client("bearer")  # ttl_seconds 100: refreshed from 90 s on
    client.execute("i1", {}, request_id="r1")
    fake_clock.advance(89)
    client.execute("i1", {}, request_id="r2")
    assert len(platform.logins()) == 1
    fake_clock.advance(1)
    client.execute("i1", {}, request_id="r3")
    assert len(platform.logins()) == 2
    tokens = [r.headers["Authorization"] for r in platform.calls("i1")]
    assert tokens[0] == tokens[1] != tokens[2]


def test_a_shorter_expires_in_wins_over_ttl(
    platform: PlatformServer, make_client: MakeClient, fake_clock: FakeClock
) -> None:
    platform.token_ttl_seconds = 50
    client = make_client("bearer")
    client.execute("i1", {}, request_id="r1")
    fake_clock.advance(45)
    client.execute("i1", {}, request_id="r2")
    assert len(platform.logins()) == 2


def test_the_token_is_read_at_a_dotted_token_field(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.token_field = "data.access_token"
    platform.require_auth = True
    auth = {**AUTHS["bearer"], "token_field": "data.access_token"}
    assert make_client(auth).execute("i1", {}, request_id="r").status == 200
    missing = r"\(login answer has no token at 'token' \(the input has no key \"token\"\)\)"
    with pytest.raises(CallError, match=missing):
        make_client("bearer", retries=2).execute("i1", {}, request_id="r")


def test_a_token_field_indexes_lists_as_conditions_do(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    # One resolver (poller.run.paths): `tokens.-1` is the last item, as in a `when` token.
    platform.token_field = "tokens.-1"
    platform.require_auth = True
    assert (
        make_client({**AUTHS["bearer"], "token_field": "tokens.-1"})
        .execute("i1", {}, request_id="r")
        .status
        == 200
    )
    beyond = {**AUTHS["bearer"], "token_field": "tokens.2"}
    with pytest.raises(CallError, match=r"at 'tokens.2' \(tokens has 2 items, no index 2\)"):
        make_client(beyond, retries=0).execute("i1", {}, request_id="r")


def test_eight_threads_share_one_client_and_one_login(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.require_auth = True
    client = make_client("bearer", retries=0)
    client.execute("warm-up", {}, request_id="r0")
    platform.expire_auth()
    platform.script("/auth/token", slow(0.2))  # every thread sees the 401 before the new login
    barrier = threading.Barrier(8)
    results: list[int] = []
    errors: list[BaseException] = []

    def run(n: int) -> None:
        barrier.wait(timeout=5)
        try:
            results.append(client.execute("i1", {"n": n}, request_id=f"t{n}").status)
        except CallError as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert results == [200] * 8
    assert len(platform.logins()) == 2  # the first login and exactly one after the expiry


def test_waiting_for_another_calls_login_respects_the_deadline(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.script("/auth/token", slow(0.4))
    client = make_client("bearer")
    first = threading.Thread(target=client.execute, args=("i1", {}), kwargs={"request_id": "a"})
    first.start()
    assert platform.wait_for_requests(1)  # the first call is now logging in, holding the lock
    with pytest.raises(CallError, match=r"waiting for another call's login; the run timeout"):
        client.execute("i2", {}, request_id="b", deadline=time.monotonic() + 0.1)
    first.join(timeout=5)
    assert [r.integration_id for r in platform.requests] == [None, "i1"]


def test_credentials_never_reach_logs_or_errors(
    platform: PlatformServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    platform.require_auth = True
    clients = {
        auth: make_client(auth, retries=1) for auth in ("session", "bearer", "api_key", "basic")
    }
    errors: list[str] = []
    for name, client in clients.items():
        client.execute(f"{name}-ok", {}, request_id="r")
        platform.script(f"{name}-ok", expire())
        client.execute(f"{name}-ok", {}, request_id="r")
        sent = platform.calls(f"{name}-ok")[-1].headers
        credential = sent.get("Authorization") or sent.get("X-API-Key") or sent.get("Cookie", "")
        own = API_KEY if name == "api_key" else PASSWORD
        leak = {"configured": own, "seen": credential.split(" ")[-1]}
        platform.script(f"{name}-leak", always(500, leak))
        with pytest.raises(CallError) as caught:
            client.execute(f"{name}-leak", {}, request_id="r")
        errors.append(str(caught.value))
        assert "***" in caught.value.body_excerpt
    secrets = {PASSWORD, API_KEY}
    for recorded in platform.requests:
        for header in ("Authorization", "X-API-Key", "Cookie"):
            if header in recorded.headers:
                secrets.add(recorded.headers[header])
                secrets.add(recorded.headers[header].split(" ")[-1].split("=")[-1])
    texts = [record.getMessage() for record in caplog.records] + errors
    assert len(caplog.records) > 10
    leaks = [(s, t) for s in secrets - {""} for t in texts if s in t]
    assert leaks == []


def test_excerpts_are_short_single_lines_redacted_before_cutting() -> None:
    secret = "s3cr3t-value-0123456789"
    body = ("x" * 190 + secret + "\n\n tail").encode()
    text = excerpt(body, Redactor([secret]))
    assert secret[:5] not in text
    assert len(text) <= 200
    assert "\n" not in text


def test_attempts_are_logged_at_debug_and_retries_at_warning(
    platform: PlatformServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="poller.run.transport")
    platform.script("flaky", fail(times=1))
    make_client(retries=1).execute("flaky", {}, request_id="r")
    ours = [r for r in caplog.records if r.name == "poller.run.transport"]
    assert [r.levelname for r in ours] == ["DEBUG", "WARNING", "DEBUG"]
    assert isinstance(ours[1].args, tuple)
    assert ours[1].args[:5] == ("live", "flaky", f"127.0.0.1:{platform.port}", 1, 503)
    assert "retry 1 of 1 in" in ours[1].getMessage()


def test_the_pool_shares_one_client_per_environment(platform: PlatformServer) -> None:
    environments = {"live": Environment(base_url=platform.url)}
    pool = ClientPool(environments, FakeClock())
    got: list[PlatformClient] = []
    threads = [threading.Thread(target=lambda: got.append(pool.get("live"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len({id(client) for client in got}) == 1
    assert got[0].execute("i1", {}, request_id="r").status == 200
    with pytest.raises(CallError, match="environment 'sandbox' is not defined"):
        pool.get("sandbox")
    pool.close()


def test_http_call_returns_json_text_or_data(platform: PlatformServer) -> None:
    platform.serve_json("/json/list", [1, 2])
    with requests.Session() as session:

        def call(path: str, **params: str) -> dict[str, Any]:
            return http_call(
                session,
                "get",
                platform.url + path,
                headers={},
                params=params,
                json_body=None,
                timeout_seconds=2,
                request_id="h1",
                clock=SystemClock(),
            ).output

        assert call("/echo", q="1") == {
            "method": "GET",
            "path": "/echo",
            "query": {"q": "1"},
            "json": None,
        }
        assert call("/text", body="plain") == {"text": "plain"}
        assert call("/json/list") == {"data": [1, 2]}
    assert {r.headers["Idempotency-Key"] for r in platform.requests} == {"h1"}


def test_http_call_retries_and_reports_the_url_without_its_query(
    platform: PlatformServer, fake_clock: FakeClock
) -> None:
    platform.script("/echo", fail(times=1))
    with requests.Session() as session:
        result = http_call(
            session,
            "POST",
            platform.url + "/echo",
            headers={},
            params={},
            json_body={"a": 1},
            timeout_seconds=2,
            request_id="h2",
            retries=1,
            clock=fake_clock,
        )
        assert (result.attempts, result.output["json"]) == (2, {"a": 1})
        with pytest.raises(CallError) as caught:
            http_call(
                session,
                "GET",
                platform.url + "/json/missing?api_key=zzz-secret",
                headers={},
                params={"token": "tok-secret"},
                json_body=None,
                timeout_seconds=2,
                request_id="h3",
                clock=fake_clock,
            )
    message = str(caught.value)
    assert message.startswith(f"http: {platform.url}/json/missing failed after 1 attempt: HTTP 404")
    assert "secret" not in message


def test_the_platform_runs_standalone_with_control_endpoints() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.platform", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        script = {"key": "i1", "behaviours": [{"status": 503, "json_body": {"e": 1}}]}
        assert requests.post(url + "/_control/script", json=script, timeout=5).ok
        assert (
            requests.post(url + "/integrations/i1/execute", json={}, timeout=5).status_code == 503
        )
        assert (
            requests.post(url + "/integrations/i1/execute", json={}, timeout=5).json()["count"] == 2
        )
        recorded = requests.get(url + "/_control/requests", timeout=5).json()
        assert [r["integration_id"] for r in recorded] == ["i1", "i1"]
        assert json.loads(json.dumps(recorded))[0]["headers"]["Content-Type"] == "application/json"
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0


def test_a_failed_call_names_its_host_but_never_the_urls_userinfo(
    platform: PlatformServer, make_client: MakeClient
) -> None:
    platform.script("down", fail(times=5))
    with_userinfo = platform.url.replace("http://", "http://ops:url-secret-7@")
    client = make_client(base_url=with_userinfo, retries=0)
    with pytest.raises(CallError) as caught:
        client.execute("down", {}, request_id="r")
    assert f"down at 127.0.0.1:{platform.port} failed" in str(caught.value)
    assert "url-secret-7" not in str(caught.value) and "ops" not in caught.value.host
