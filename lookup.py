"""The integration-platform client, as chains and users' functions see it: a PlatformClient
per environment (one requests.Session, its login, retries with backoff, an X-Request-ID per
call), the ClientPool that keeps one per environment, and `http_call` for plain HTTP steps.

Every failure is a CallError naming the environment, the integration id, the HTTP status
and the attempts; no requests exception escapes. The machinery lives in poller.run.client
and poller.run.transport; this file is its face and holds no code of its own.
"""

from __future__ import annotations

from poller.errors import CallError
from poller.run.client import ClientPool, PlatformClient, http_call
from poller.run.transport import CallResult

__all__ = ["CallError", "CallResult", "ClientPool", "PlatformClient", "http_call"]
