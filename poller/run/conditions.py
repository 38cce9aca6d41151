"""Judging a chain entry's `when` condition against the previous step's output ("tokens").

`evaluate` never raises on missing or mistyped data: it answers (holds, reason) with a
reason a person can read in the run record. Semantics:

- A token is a dotted path (poller.run.paths): object keys, and list indexes as integers
  (`items.0.id`, `items.-1` is the last item). Keys that contain a dot cannot be addressed.
- A path that does not resolve is *missing*: `exists: false` holds, every other operator
  (`not_equals` and `not_in` included) does not, since there is no value to judge.
  A JSON null that is present exists (as MongoDB's `$exists`).
- `equals`, `not_equals`, `in`, `not_in` and `contains` on lists compare as JSON: 1 equals
  1.0, but true never equals 1, and "5" never equals 5.
- `gt`, `gte`, `lt`, `lte` compare two numbers, or two strings (so ISO dates order
  correctly); any other pair is false with a reason naming the mismatch.
- `contains`: a substring of a string, an element of a list, or a key of an object.
- `matches`: `re.search` on a string value (anchor with ^ and $ for a whole match).
- A list of conditions holds when all do (an empty list holds); `{"any": [...]}` when one does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from poller.config.chain import AnyOf, Condition
from poller.run.paths import kind_of, resolve
from poller.timeformat import json_default

_SYMBOLS = {
    "equals": "==",
    "not_equals": "!=",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "in": "in",
    "not_in": "not in",
    "contains": "contains",
    "matches": "matches",
}
_ORDER = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def evaluate(cond: Condition | AnyOf | list[Any], tokens: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether `cond` (a Condition, an AnyOf or a list of them) holds on `tokens`, and why."""
    if isinstance(cond, Condition):
        return _evaluate_one(cond, tokens)
    if isinstance(cond, AnyOf):
        reasons = []
        for item in cond.any:
            holds, reason = evaluate(item, tokens)
            if holds:
                return True, reason
            reasons.append(reason)
        return False, "none of the alternatives holds: " + "; ".join(reasons)
    if isinstance(cond, (list, tuple)):
        reasons = []
        for item in cond:
            holds, reason = evaluate(item, tokens)
            if not holds:
                return False, reason
            reasons.append(reason)
        return True, " and ".join(reasons) if reasons else "no conditions"
    return False, f"not a condition: {_show(cond)}"


def _evaluate_one(cond: Condition, tokens: Mapping[str, Any]) -> tuple[bool, str]:
    operator, operand, token = cond.operator, cond.operand, cond.token
    found, value, why = resolve(tokens, token)
    if operator == "exists":
        if not found:
            missing = f"{token} is missing ({why})"
            return (True, missing) if operand is False else (False, missing + ", expected it")
        if operand is False:
            return False, f"{token} = {_show(value)}, expected it to be missing"
        return True, f"{token} exists"
    if not found:
        return False, f"{token} is missing ({why})"
    shown = f"{token} = {_show(value)}"
    expectation = f"{_SYMBOLS[operator]} {_show(operand)}"
    if operator in _ORDER:
        if not _comparable(value, operand):
            return False, f"{token} is {kind_of(value)}, not comparable with {_show(operand)}"
        holds = bool(_ORDER[operator](value, operand))
    elif operator in ("equals", "not_equals"):
        holds = _json_equal(value, operand) == (operator == "equals")
    elif operator in ("in", "not_in"):
        member = any(_json_equal(value, item) for item in operand)
        holds = member == (operator == "in")
    elif operator == "contains":
        verdict = _contains(value, operand)
        if verdict is None:
            return False, (
                f"{token} is {kind_of(value)}; contains needs a string, a list or an object"
                if not isinstance(value, str)
                else f"{token} is a string; contains {_show(operand)} needs a string"
            )
        holds = verdict
    else:
        if not isinstance(value, str):
            return False, f"{token} is {kind_of(value)}; matches needs a string"
        holds = re.search(operand, value) is not None
    if holds:
        return True, f"{shown} ({expectation})"
    return False, f"{shown}, expected {expectation}"


def _contains(value: Any, operand: Any) -> bool | None:
    if isinstance(value, str):
        return operand in value if isinstance(operand, str) else None
    if isinstance(value, list):
        return any(_json_equal(item, operand) for item in value)
    if isinstance(value, Mapping):
        return isinstance(operand, str) and operand in value
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _comparable(a: Any, b: Any) -> bool:
    return (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[key], b[key]) for key in a)
    return type(a) is type(b) and bool(a == b)


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=json_default, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"
