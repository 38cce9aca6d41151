"""Run ids and request IDs: UUIDs as the uuid module makes them, built without its objects."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from poller.run.chain import REQUEST_ID_NAMESPACE, request_base, request_id
from poller.run.results import new_run_id


def test_request_ids_are_uuid5_of_the_fire_step_and_entry() -> None:
    for i in range(50):
        fire = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=i * 7.25)
        base = uuid.uuid5(REQUEST_ID_NAMESPACE, f"job{i}@{fire.isoformat()}")
        assert request_base(f"job{i}", fire, new_run_id()) == base.bytes
        for step, entry in ((0, 0), (1, 0), (2, 3)):
            expected = str(uuid.uuid5(base, f"{step}.{entry}"))
            assert request_id(request_base(f"job{i}", fire, "r"), step, entry) == expected


def test_a_run_without_a_fire_gets_request_ids_of_its_run_id() -> None:
    one, other = new_run_id(), new_run_id()
    assert request_base("job", None, one) == uuid.uuid5(REQUEST_ID_NAMESPACE, one).bytes
    assert request_base("job", None, one) == request_base("job", None, one)  # redelivered
    assert request_base("job", None, one) != request_base("job", None, other)


def test_run_ids_are_unique_version_4_uuids() -> None:
    ids = [new_run_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:100]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
