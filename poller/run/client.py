"""The authenticated integration-platform client: one requests.Session per environment,
login (session, bearer, api key, basic), request ids, and plain HTTP calls for chain steps.

The exchange itself and the retry loop live in poller.run.transport: no requests exception
escapes and no credential reaches a log line or an error.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from poller.clock import Clock, SystemClock
from poller.config.chain import MAX_RESPONSE_BYTES
from poller.config.environments import (
    PUBLIC_HEADERS,
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    Environment,
    SessionAuth,
    basic_credentials,
)
from poller.config.kafka import KafkaSettings
from poller.errors import CallError
from poller.kafka.publisher import Publisher
from poller.logs import run_logger
from poller.redaction import Redactor, is_secret_name, is_secret_parameter, mask_url
from poller.run.paths import kind_of, resolve
from poller.run.retry import RetryPolicy
from poller.run.transport import (
    Answer,
    AttemptError,
    Call,
    CallResult,
    Session,
    check_status,
    excerpt,
    send,
    with_retries,
)

log = run_logger(__name__)

# A bearer token is renewed once this share of its lifetime has passed, so a call never
# goes out with a token about to expire in flight.
TOKEN_REFRESH_FRACTION = 0.9


class _Login:
    """An environment's credentials; logs in (one thread at a time) when needed."""

    def __init__(
        self,
        name: str,
        environment: Environment,
        session: requests.Session,
        clock: Clock,
        redactor: Redactor,
    ) -> None:
        self._name = name
        self._environment = environment
        self._session = session
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every login; a 401 names the one it saw
        self._is_valid = False
        self._token = ""
        self._lifetime_seconds = 0.0
        self._obtained_at = clock.now()
        self.redactor = redactor
        auth = environment.auth
        self._static: dict[str, str] = {}
        if isinstance(auth, ApiKeyAuth):
            self._static = {auth.header: auth.value.get_secret_value()}
        elif isinstance(auth, BasicAuth):
            header, encoded = basic_credentials(auth.username, auth.password.get_secret_value())
            self._static = {"Authorization": header}
            redactor.add(encoded)
        if isinstance(auth, ApiKeyAuth | BasicAuth | SessionAuth | BearerAuth):
            secret = auth.value if isinstance(auth, ApiKeyAuth) else auth.password
            redactor.add(secret.get_secret_value())
        redactor.add(
            *(v for k, v in environment.headers.items() if k.lower() not in PUBLIC_HEADERS),
            *self._static.values(),
        )

    @property
    def logs_in(self) -> bool:
        return isinstance(self._environment.auth, SessionAuth | BearerAuth)

    def prepare(self, timeout: float) -> tuple[int, dict[str, str]]:
        """Log in if needed; the login generation and the auth headers to send."""
        if not self.logs_in:
            return self._generation, self._static
        # One login at a time; the others then reuse its result. A call waits for another's
        # login no longer than its own timeout, so its deadline still holds.
        if not self._lock.acquire(timeout=timeout):
            raise AttemptError("timed out waiting for another call's login", retryable=True)
        try:
            if not self._is_valid or self._is_stale():
                self._login(timeout)
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            return self._generation, headers
        finally:
            self._lock.release()

    def invalidate(self, seen_generation: int) -> None:
        """After a 401: log in again on next use, unless another call already did."""
        with self._lock:
            if self._generation == seen_generation:
                self._is_valid = False

    def _is_stale(self) -> bool:
        if not isinstance(self._environment.auth, BearerAuth):
            return False
        age = (self._clock.now() - self._obtained_at).total_seconds()
        return age >= TOKEN_REFRESH_FRACTION * self._lifetime_seconds

    def _login(self, timeout: float) -> None:
        auth = self._environment.auth
        if not isinstance(auth, SessionAuth | BearerAuth):
            return
        url = self._environment.base_url + auth.login_path
        credentials = {"username": auth.username, "password": auth.password.get_secret_value()}
        answer = send(
            self._session,
            "POST",
            url,
            headers=self._environment.headers,
            json_body=credentials,
            timeout=timeout,
            max_bytes=self._environment.max_response_bytes,
        )
        try:
            check_status(answer, self.redactor, self._clock)
        except AttemptError as failure:
            failure.reason = f"login at {auth.login_path} failed: {failure.reason}"
            raise
        if isinstance(auth, BearerAuth):
            self._token, self._lifetime_seconds = _read_token(answer, auth)
            self._obtained_at = self._clock.now()
            self.redactor.add(self._token)
        self.redactor.add(*answer.cookie_values)
        self._generation += 1
        self._is_valid = True
        log.info("%s: logged in at %s (%s)", self._name, auth.login_path, auth.type)


def _read_token(answer: Answer, auth: BearerAuth) -> tuple[str, float]:
    """The token at `token_field` and its lifetime (ttl_seconds, or expires_in if shorter)."""
    try:
        reply: Any = json.loads(answer.content)
    except ValueError:
        raise AttemptError("login answer is not JSON", status=answer.status) from None
    found, token, why = resolve(reply, auth.token_field)
    if not found or not isinstance(token, str) or not token:
        if found:
            why = "it is empty" if isinstance(token, str) else f"it is {kind_of(token)}"
        reason = f"login answer has no token at {auth.token_field!r} ({why})"
        raise AttemptError(reason, status=answer.status)
    lifetime = auth.ttl_seconds
    expires_in = reply.get("expires_in") if isinstance(reply, dict) else None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        lifetime = min(lifetime, float(expires_in))
    return token, lifetime


class PlatformClient:
    """Calls integrations on one environment of the platform, over one shared Session."""

    def __init__(
        self,
        name: str,
        environment: Environment,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        redactor: Redactor | None = None,
        connections: int = 1,
    ) -> None:
        """`connections`: the most calls at once (runs times their for_each max_parallel)."""
        self.name = name
        self.environment = environment
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._session = Session(connections)  # connection pool and cookie jar, shared by runs
        self.redactor = redactor or Redactor()
        self._login = _Login(name, environment, self._session, self._clock, self.redactor)
        self._policy = RetryPolicy(
            environment.retries, environment.backoff_seconds, environment.backoff_max_seconds
        )

    def execute(
        self,
        integration_id: str,
        payload: dict[str, Any],
        *,
        request_id: str,
        deadline: float | None = None,
    ) -> CallResult:
        """Run an integration with `payload`; its JSON answer as a dict.

        `deadline` is a time.monotonic() instant: no attempt starts and no wait reaches past it.
        Raises:
            CallError: after the retries, on another 4xx, on invalid JSON, or at the deadline.
        """
        env = self.environment
        path = env.execute.path.replace("{integration_id}", quote(integration_id, safe=""))
        url = env.base_url + path
        call = Call(
            self.name,
            integration_id,
            self._policy,
            env.timeout_seconds,
            deadline,
            self._clock,
            self._rng,
            host_of(env.base_url),
        )

        def attempt(timeout: float) -> tuple[int, dict[str, Any]]:
            generation, auth_headers = self._login.prepare(timeout)
            # The same request id on every retry lets the platform drop duplicates, which is
            # what makes retrying a POST that may have been applied safe.
            headers = {
                **env.headers,
                "X-Request-ID": request_id,
                "Idempotency-Key": request_id,
                **auth_headers,
            }
            answer = send(
                self._session,
                env.execute.method.upper(),
                url,
                headers=headers,
                json_body=payload,
                timeout=timeout,
                max_bytes=env.max_response_bytes,
            )
            if answer.status == 401 and self._login.logs_in:
                raise AttemptError(
                    answer.phrase or "Unauthorized",
                    status=401,
                    excerpt=excerpt(answer.content, self.redactor),
                    login_generation=generation,
                )
            check_status(answer, self.redactor, self._clock)
            return answer.status, self._parse(answer)

        return with_retries(call, attempt, self._login.invalidate)

    def _parse(self, answer: Answer) -> dict[str, Any]:
        if not answer.content.strip():
            return {}
        try:
            value = json.loads(answer.content)
        except ValueError:
            excerpt_text = excerpt(answer.content, self.redactor)
            raise AttemptError("invalid JSON", status=answer.status, excerpt=excerpt_text) from None
        return value if isinstance(value, dict) else {"data": value}

    def close(self) -> None:
        self._session.close()


class ClientPool:
    """One PlatformClient per environment name, created on first use and shared by runs.

    `redactor` learns every credential its clients use or obtain (tokens, cookies); runs
    mask their records with it. `connections`: the most calls at once, to keep that many
    connections per host (Config.calls_at_once). `publisher` sends the `kafka` entries'
    messages, to settings.kafka's broker.
    """

    def __init__(
        self,
        environments: Mapping[str, Environment],
        clock: Clock | None = None,
        redactor: Redactor | None = None,
        connections: int = 1,
        kafka: KafkaSettings | None = None,
    ) -> None:
        self.publisher = Publisher(kafka or KafkaSettings())
        self._environments = dict(environments)
        self._clock = clock
        self._connections = connections
        self.redactor = redactor or Redactor()
        self._lock = threading.Lock()
        self._clients: dict[str, PlatformClient] = {}
        self.is_closed = False

    def get(self, name: str) -> PlatformClient:
        """The client of environment `name`; CallError if the config does not define it."""
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                environment = self._environments.get(name)
                if environment is None:
                    reason = f"environment {name!r} is not defined"
                    raise CallError(name, "", None, 0, reason=reason)
                client = PlatformClient(
                    name,
                    environment,
                    self._clock,
                    redactor=self.redactor,
                    connections=self._connections,
                )
                self._clients[name] = client
            return client

    def close(self) -> None:
        """Close every client's session (a later get() would open new ones)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            self.is_closed = True
        for client in clients:
            client.close()
        self.publisher.close()


def display_url(url: str) -> str:
    """A URL fit for logs and errors: no query string or fragment, userinfo masked."""
    parts = urlsplit(url)
    return mask_url(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))


def host_of(url: str) -> str:
    """Where a URL goes, for logs and errors: host and port, never its userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


HTTP_BACKOFF_SECONDS = 1.0
"""A plain HTTP entry's first retry waits this long, doubling up to HTTP_BACKOFF_MAX_SECONDS."""
HTTP_BACKOFF_MAX_SECONDS = 30.0


def http_call(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    params: Mapping[str, Any],
    json_body: Any,
    timeout_seconds: float,
    request_id: str,
    retries: int = 2,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    deadline: float | None = None,
    clock: Clock,
    redactor: Redactor | None = None,
) -> CallResult:
    """A plain HTTP call (chain entry {"http": ...}) with the platform's retry rules.

    `clock` is the run's: its backoff ends when the daemon stops (a clock of its own per
    call would also hold two pipes open for good).

    Output: the JSON object answered; another JSON value as {"data": value}; a body that is
    not JSON as {"text": body}; an empty body as {}.
    Raises:
        CallError: environment "http", integration_id the URL without its query.
    """
    redactor = redactor or Redactor()
    redactor.add(
        *(str(v) for k, v in headers.items() if is_secret_name(k) or is_secret_parameter(k)),
        *(str(v) for k, v in params.items() if is_secret_parameter(k) and v is not None),
        urlsplit(url).password or "",
    )
    policy = RetryPolicy(retries, HTTP_BACKOFF_SECONDS, HTTP_BACKOFF_MAX_SECONDS)
    call = Call(
        "http", display_url(url), policy, timeout_seconds, deadline, clock, None, host_of(url)
    )
    sent = {"X-Request-ID": request_id, "Idempotency-Key": request_id, **headers}

    def attempt(timeout: float) -> tuple[int, dict[str, Any]]:
        answer = send(
            session,
            method.upper(),
            url,
            headers=sent,
            params=params,
            json_body=json_body,
            timeout=timeout,
            max_bytes=max_response_bytes,
        )
        check_status(answer, redactor, clock)
        return answer.status, _plain_output(answer)

    return with_retries(call, attempt)


def _plain_output(answer: Answer) -> dict[str, Any]:
    text = answer.content.decode("utf-8", errors="replace")
    if not text.strip():
        return {}
    content_type = answer.headers.get("Content-Type", "").lower()
    if "json" in content_type or not content_type:
        try:
            value = json.loads(text)
        except ValueError:
            return {"text": text}
        return value if isinstance(value, dict) else {"data": value}
    return {"text": text}
