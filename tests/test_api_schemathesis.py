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

import jsonschema_rs
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


def when(operators: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """A chain of one integration entry run when `operators` hold for data.n."""
    return [[{"id": "x", "when": {"token": "data.n", **operators}}]]


FTP = {"url": "ftp://example.com/x"}
# (what it shows, a job body, whether the server takes it): each is checked against both
JOB_BODIES: list[tuple[str, dict[str, Any], bool]] = [
    ("every", {"id": "v-every", "every": "10m"}, True),
    ("every-object", {"id": "v-obj", "every": {"hours": 2, "minutes": 0}, "time": None}, True),
    ("times-and-days", {"id": "v-times", "time": ["06:00", "18:30:15"], "days": ["Mon", 4]}, True),
    ("cron", {"id": "v-cron", "cron": "0 8-18 * * 1-5", "every": None}, True),
    ("label-only", {"label": "From A Label", "every": "1h"}, True),
    ("variable", {"id": "v-var", "time": "${V_TIME:-06:00}", "days": ["${V_DAY:-sat}"]}, True),
    ("condition", {"id": "v-when", "every": "1h", "integrationIDs": when({"gt": 1})}, True),
    ("schedules-all-null", {"id": "v-null", "time": None, "every": None, "cron": None}, False),
    ("no-schedule", {"id": "v-none"}, False),
    ("two-schedules", {"id": "v-two", "every": "1h", "cron": "0 * * * *"}, False),
    ("bad-time", {"id": "v-t", "time": "25:00"}, False),
    ("no-times", {"id": "v-t0", "time": []}, False),
    ("zero-interval", {"id": "v-e0", "every": "0s"}, False),
    ("unknown-unit", {"id": "v-eu", "every": {"weeks": 1}}, False),
    ("zero-object", {"id": "v-e1", "every": {"hours": 0}}, False),
    ("days-with-cron", {"id": "v-dc", "cron": "0 8 * * *", "days": [1]}, False),
    ("cron-fields", {"id": "v-c3", "cron": "0 8 *"}, False),
    ("weekday-7", {"id": "v-d7", "every": "1h", "days": [7]}, False),
    ("weekday-name", {"id": "v-dn", "every": "1h", "blackout_days": ["someday"]}, False),
    ("bad-id", {"id": "no spaces", "every": "1h"}, False),
    ("no-id-or-label", {"every": "1h"}, False),
    (
        "two-operators",
        {"id": "v-op", "every": "1h", "integrationIDs": when({"gt": 1, "lt": 2})},
        False,
    ),
    ("not-http", {"id": "v-ftp", "every": "1h", "integrationIDs": [[{"http": FTP}]]}, False),
]


def schema_accepts(document: dict[str, Any], component: str, body: dict[str, Any]) -> bool:
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    return bool(jsonschema_rs.Draft202012Validator(schema).is_valid(body))


@pytest.mark.parametrize(
    ("body", "valid"),
    [(body, valid) for _, body, valid in JOB_BODIES],
    ids=[name for name, _, _ in JOB_BODIES],
)
def test_the_job_schema_accepts_what_the_server_accepts(
    api: ApiDaemon, body: dict[str, Any], valid: bool
) -> None:
    job = {"integrationIDs": [["x"]], **body, "enabled": False, "dry_run": True}
    document = api.json("/openapi.json")
    response = api.post("/jobs", json=job)
    assert response.status_code == (201 if valid else 422), response.text
    if valid:
        assert api.request("DELETE", f"/jobs/{response.json()['job_id']}").status_code == 200
    assert schema_accepts(document, "Job", job) is valid


def test_a_replacement_takes_its_id_from_the_url(api: ApiDaemon) -> None:
    document = api.json("/openapi.json")
    put = document["paths"]["/jobs/{job_id}"]["put"]["requestBody"]["content"]
    assert put["application/json"]["schema"] == {"$ref": "#/components/schemas/JobReplacement"}
    body = {"every": "1h", "integrationIDs": [["x"]], "enabled": False}
    assert api.post("/jobs", json=body).status_code == 422  # a new job needs an id or label
    assert not schema_accepts(document, "Job", body)
    assert api.post("/jobs", json={**body, "id": "v-put"}).status_code == 201
    try:
        assert api.request("PUT", "/jobs/v-put", json=body).status_code == 200
        assert schema_accepts(document, "JobReplacement", body)
        bad = {**body, "every": None}
        assert api.request("PUT", "/jobs/v-put", json=bad).status_code == 422
        assert not schema_accepts(document, "JobReplacement", bad)
    finally:
        assert api.request("DELETE", "/jobs/v-put").status_code == 200


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
