"""`when` conditions: every operator, missing and mistyped tokens, lists, nesting, reasons."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from poller.config.chain import Cond
from poller.run.conditions import evaluate
from poller.run.paths import resolve

TOKENS: dict[str, Any] = {
    "data": {"count": 0, "total": 12.5, "name": "report-2024.csv", "ok": True, "none": None},
    "status": "done",
    "day": "2024-05-01",
    "items": [{"id": "a1", "tags": ["x", "y"]}, {"id": "b2", "tags": []}],
    "meta": {"keys": {"alpha": 1}},
    "codes": [200, 201],
}
COND = TypeAdapter(Cond)


def check(raw: Any) -> tuple[bool, str]:
    return evaluate(COND.validate_python(raw), TOKENS)


@pytest.mark.parametrize(
    ("raw", "holds", "reason"),
    [
        ({"token": "data.count", "equals": 0}, True, "data.count = 0 (== 0)"),
        ({"token": "data.count", "equals": 0.0}, True, "data.count = 0 (== 0.0)"),
        ({"token": "data.count", "equals": 1}, False, "data.count = 0, expected == 1"),
        ({"token": "data.ok", "equals": 1}, False, "data.ok = true, expected == 1"),
        ({"token": "data.ok", "equals": True}, True, "data.ok = true (== true)"),
        ({"token": "data.count", "equals": "0"}, False, 'data.count = 0, expected == "0"'),
        ({"token": "data.none", "equals": None}, True, "data.none = null (== null)"),
        ({"token": "codes", "equals": [200, 201.0]}, True, "codes = [200, 201] (== [200, 201.0])"),
        (
            {"token": "meta.keys", "equals": {"alpha": 1}},
            True,
            'meta.keys = {"alpha": 1} (== {"alpha": 1})',
        ),
        ({"token": "status", "not_equals": "failed"}, True, 'status = "done" (!= "failed")'),
        ({"token": "status", "not_equals": "done"}, False, 'status = "done", expected != "done"'),
        ({"token": "data.count", "gt": 0}, False, "data.count = 0, expected > 0"),
        ({"token": "data.total", "gt": 12}, True, "data.total = 12.5 (> 12)"),
        ({"token": "data.count", "gte": 0}, True, "data.count = 0 (>= 0)"),
        ({"token": "data.total", "lt": 12.5}, False, "data.total = 12.5, expected < 12.5"),
        ({"token": "data.total", "lte": 12.5}, True, "data.total = 12.5 (<= 12.5)"),
        ({"token": "day", "gte": "2024-01-01"}, True, 'day = "2024-05-01" (>= "2024-01-01")'),
        ({"token": "status", "in": ["done", "ok"]}, True, 'status = "done" (in ["done", "ok"])'),
        ({"token": "data.count", "in": [1, 2]}, False, "data.count = 0, expected in [1, 2]"),
        ({"token": "data.ok", "in": [1]}, False, "data.ok = true, expected in [1]"),
        ({"token": "status", "not_in": ["failed"]}, True, 'status = "done" (not in ["failed"])'),
        (
            {"token": "status", "not_in": ["done"]},
            False,
            'status = "done", expected not in ["done"]',
        ),
        ({"token": "data.count", "exists": True}, True, "data.count exists"),
        ({"token": "data.none", "exists": True}, True, "data.none exists"),
        (
            {"token": "data.count", "exists": False},
            False,
            "data.count = 0, expected it to be missing",
        ),
        (
            {"token": "data.name", "contains": "2024"},
            True,
            'data.name = "report-2024.csv" (contains "2024")',
        ),
        (
            {"token": "data.name", "contains": "2023"},
            False,
            'data.name = "report-2024.csv", expected contains "2023"',
        ),
        (
            {"token": "items.0.tags", "contains": "y"},
            True,
            'items.0.tags = ["x", "y"] (contains "y")',
        ),
        ({"token": "codes", "contains": 201}, True, "codes = [200, 201] (contains 201)"),
        (
            {"token": "meta.keys", "contains": "alpha"},
            True,
            'meta.keys = {"alpha": 1} (contains "alpha")',
        ),
        (
            {"token": "meta.keys", "contains": "beta"},
            False,
            'meta.keys = {"alpha": 1}, expected contains "beta"',
        ),
        (
            {"token": "data.name", "matches": r"^report-\d{4}\.csv$"},
            True,
            r'data.name = "report-2024.csv" (matches "^report-\\d{4}\\.csv$")',
        ),
        (
            {"token": "data.name", "matches": "^2024"},
            False,
            'data.name = "report-2024.csv", expected matches "^2024"',
        ),
        (
            {"token": "data.name", "matches": "2024"},
            True,
            'data.name = "report-2024.csv" (matches "2024")',
        ),
    ],
    ids=[
        "equals-number",
        "equals-int-float",
        "equals-false",
        "equals-bool-is-not-1",
        "equals-bool",
        "equals-string-is-not-number",
        "equals-null",
        "equals-list",
        "equals-object",
        "not_equals-true",
        "not_equals-false",
        "gt-false",
        "gt-float",
        "gte-equal",
        "lt-false",
        "lte-equal",
        "gte-iso-date-strings",
        "in-true",
        "in-false",
        "in-bool-is-not-1",
        "not_in-true",
        "not_in-false",
        "exists-true",
        "exists-null",
        "exists-false-present",
        "contains-substring",
        "contains-substring-false",
        "contains-list-element",
        "contains-number-in-list",
        "contains-object-key",
        "contains-object-key-false",
        "matches-full",
        "matches-anchored-false",
        "matches-search",
    ],
)
def test_operators(raw: Any, holds: bool, reason: str) -> None:
    assert check(raw) == (holds, reason)


@pytest.mark.parametrize(
    ("raw", "holds", "reason"),
    [
        (
            {"token": "data.missing", "gt": 0},
            False,
            'data.missing is missing (data has no key "missing")',
        ),
        (
            {"token": "data.missing", "not_equals": 1},
            False,
            'data.missing is missing (data has no key "missing")',
        ),
        (
            {"token": "data.missing", "not_in": [1]},
            False,
            'data.missing is missing (data has no key "missing")',
        ),
        (
            {"token": "data.missing", "exists": False},
            True,
            'data.missing is missing (data has no key "missing")',
        ),
        (
            {"token": "data.missing", "exists": True},
            False,
            'data.missing is missing (data has no key "missing"), expected it',
        ),
        (
            {"token": "nothing", "equals": 1},
            False,
            'nothing is missing (the input has no key "nothing")',
        ),
        (
            {"token": "items.5.id", "equals": "a1"},
            False,
            "items.5.id is missing (items has 2 items, no index 5)",
        ),
        (
            {"token": "items.first", "equals": "a1"},
            False,
            "items.first is missing (items is a list; 'first' is not an index)",
        ),
        (
            {"token": "status.code", "equals": 1},
            False,
            "status.code is missing (status is a string, not an object or a list)",
        ),
        (
            {"token": "data.none.x", "exists": False},
            True,
            "data.none.x is missing (data.none is null, not an object or a list)",
        ),
    ],
    ids=[
        "gt",
        "not_equals",
        "not_in",
        "exists-false-holds",
        "exists-true",
        "top-level",
        "index-out-of-range",
        "list-key-not-index",
        "through-a-string",
        "through-null",
    ],
)
def test_missing_tokens(raw: Any, holds: bool, reason: str) -> None:
    assert check(raw) == (holds, reason)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"token": "data.name", "gt": 3}, "data.name is a string, not comparable with 3"),
        ({"token": "data.count", "lt": "5"}, 'data.count is a number, not comparable with "5"'),
        ({"token": "data.ok", "gte": 0}, "data.ok is a boolean, not comparable with 0"),
        ({"token": "data.none", "lte": 1}, "data.none is null, not comparable with 1"),
        ({"token": "items", "gt": 1}, "items is a list, not comparable with 1"),
        ({"token": "data.count", "matches": "0"}, "data.count is a number; matches needs a string"),
        (
            {"token": "data.count", "contains": 0},
            "data.count is a number; contains needs a string, a list or an object",
        ),
        (
            {"token": "data.name", "contains": 2024},
            "data.name is a string; contains 2024 needs a string",
        ),
        ({"token": "meta.keys", "contains": 1}, 'meta.keys = {"alpha": 1}, expected contains 1'),
    ],
    ids=[
        "string-gt-number",
        "number-lt-string",
        "bool-gte-number",
        "null-lte",
        "list-gt",
        "matches-number",
        "contains-in-number",
        "contains-number-in-string",
        "contains-number-key",
    ],
)
def test_type_mismatches_are_false_with_a_reason(raw: Any, reason: str) -> None:
    assert check(raw) == (False, reason)


@pytest.mark.parametrize(
    ("raw", "holds", "reason"),
    [
        ("items.0.id", True, '"a1"'),
        ("items.-1.id", True, '"b2"'),
        ("items.1.tags", True, "[]"),
        ("meta.keys.alpha", True, "1"),
    ],
    ids=["first", "last", "nested-list", "nested-object"],
)
def test_list_indexing(raw: str, holds: bool, reason: str) -> None:
    found, value, _ = resolve(TOKENS, raw)
    assert found is holds
    assert check({"token": raw, "exists": True}) == (True, f"{raw} exists")
    assert check({"token": raw, "equals": value})[1] == f"{raw} = {reason} (== {reason})"


@pytest.mark.parametrize(
    ("raw", "holds", "reason"),
    [
        ([], True, "no conditions"),
        (
            [{"token": "status", "equals": "done"}, {"token": "data.total", "gt": 10}],
            True,
            'status = "done" (== "done") and data.total = 12.5 (> 10)',
        ),
        (
            [{"token": "status", "equals": "done"}, {"token": "data.count", "gt": 0}],
            False,
            "data.count = 0, expected > 0",
        ),
        (
            {"any": [{"token": "data.count", "gt": 0}, {"token": "status", "equals": "done"}]},
            True,
            'status = "done" (== "done")',
        ),
        (
            {"any": [{"token": "data.count", "gt": 0}, {"token": "nope", "exists": True}]},
            False,
            "none of the alternatives holds: data.count = 0, expected > 0; "
            'nope is missing (the input has no key "nope"), expected it',
        ),
        (
            [
                {"token": "codes", "contains": 200},
                {
                    "any": [
                        [
                            {"token": "data.count", "equals": 0},
                            {"token": "data.ok", "equals": True},
                        ],
                        {"token": "status", "equals": "failed"},
                    ]
                },
            ],
            True,
            "codes = [200, 201] (contains 200) and data.count = 0 (== 0) "
            "and data.ok = true (== true)",
        ),
        (
            {
                "any": [
                    [{"token": "data.count", "equals": 0}, {"token": "data.ok", "equals": False}],
                    {"any": [{"token": "status", "equals": "failed"}]},
                ]
            },
            False,
            "none of the alternatives holds: data.ok = true, expected == false; "
            'none of the alternatives holds: status = "done", expected == "failed"',
        ),
    ],
    ids=[
        "empty-list",
        "all-hold",
        "all-one-fails",
        "any-one-holds",
        "any-none-hold",
        "all-of-any-of-all",
        "any-nested-fails",
    ],
)
def test_combinations(raw: Any, holds: bool, reason: str) -> None:
    assert check(raw) == (holds, reason)


@pytest.mark.parametrize(
    "tokens",
    [{}, {"data": None}, {"data": [1, 2]}, {"data": {"count": {"deep": 1}}}],
    ids=["empty", "null-parent", "list-parent", "object-value"],
)
def test_never_raises_on_odd_data(tokens: dict[str, Any]) -> None:
    for operator, operand in [
        ("equals", 1),
        ("not_equals", 1),
        ("gt", 1),
        ("gte", "a"),
        ("lt", None),
        ("lte", 1),
        ("in", [1]),
        ("not_in", [1]),
        ("exists", True),
        ("contains", 1),
        ("matches", "x"),
    ]:
        cond = COND.validate_python({"token": "data.count", operator: operand})
        holds, reason = evaluate(cond, tokens)
        assert isinstance(holds, bool)
        assert reason.startswith("data.count")
