"""Property-based tests of the API from its own /openapi.json (schemathesis): no 500s, every
response matches its documented status, content type and schema.

Generated jobs must never do anything: POST/PUT bodies are forced to `enabled: false` and
`dry_run: true`, bodies with `function` entries are rejected (they would import any module),
resume is left out (it could enable a generated job), and the daemon's HTTP goes to a
closed local proxy port. Bounded: a few examples per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from schemathesis import Case, GenerationMode, checks
from schemathesis.schemas import BaseSchema

from tests.apiproc import API_KEY, ApiDaemon, api_settings, start_api_daemon

CLOSED_PROXY = "http://127.0.0.1:9"
EXAMPLES = 8
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiDaemon]:
    config = {
        "settings": {"api": api_settings()},
        "jobs": [{"id": "tick", "every": "1h", "integrationIDs": [[{"function": "steps:tick"}]]}],
    }
    proxies = {name: CLOSED_PROXY for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    running = start_api_daemon(
        tmp_path_factory.mktemp("schemathesis"), config, NO_PROXY="", **proxies
    )
    yield running
    running.daemon.stop()


@pytest.fixture(scope="module")
def api_schema(api: ApiDaemon) -> BaseSchema:
    return schemathesis.openapi.from_url(api.url + "/openapi.json")


def runs_code(body: Any) -> bool:
    chain = body.get("integrationIDs") if isinstance(body, dict) else None
    return isinstance(chain, list) and any(
        isinstance(entry, dict) and "function" in entry
        for step in chain
        if isinstance(step, list)
        for entry in step
    )


# (method, path, also fuzzed with invalid input: it has parameters or a body that can be wrong)
OPERATIONS = [
    ("GET", "/", False),
    ("GET", "/health", False),
    ("GET", "/status", False),
    ("GET", "/logs", True),
    ("GET", "/jobs", True),
    ("POST", "/jobs", True),
    ("GET", "/jobs/{job_id}", False),
    ("PUT", "/jobs/{job_id}", True),
    ("DELETE", "/jobs/{job_id}", False),
    ("GET", "/jobs/{job_id}/runs", True),
    ("GET", "/runs/{run_id}", False),
    ("GET", "/metrics", False),
    ("POST", "/jobs/{job_id}/trigger", True),
    ("POST", "/trigger", False),
    ("POST", "/jobs/{job_id}/pause", False),
]
CASES = [
    (method, path, mode)
    for method, path, has_invalid in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if has_invalid or mode is GenerationMode.POSITIVE
]


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES]
)
def test_the_api_keeps_its_openapi_promises(
    api: ApiDaemon, api_schema: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.generate],
    )
    def check(case: Case) -> None:
        if isinstance(case.body, dict) and case.method in ("POST", "PUT"):
            if runs_code(case.body):
                reject()
            case.body = {**case.body, "enabled": False, "dry_run": True}
        case.call_and_validate(
            base_url=api.url, headers={"X-API-Key": API_KEY}, checks=CHECKS, timeout=30
        )

    check()


def test_the_openapi_document_describes_every_endpoint(api: ApiDaemon) -> None:
    document = api.json("/openapi.json")
    assert set(document["paths"]) == {
        "/",
        "/health",
        "/status",
        "/logs",
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/runs",
        "/runs/{run_id}",
        "/metrics",
        "/jobs/{job_id}/trigger",
        "/trigger",
        "/jobs/{job_id}/pause",
        "/jobs/{job_id}/resume",
    }
    assert "Job" in document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
