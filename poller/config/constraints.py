"""What the config validators accept beyond the types, said in JSON Schema for
config.schema.json and the API's job bodies: string patterns, ranges, and which schedule
fields go together.

It only documents: `Field(json_schema_extra=...)` is never checked, so the validators stay
the one truth of what is accepted, and these keywords must say the same. Where JSON Schema
cannot say it (a zone name, a cron that can fire, unique ids), they say less. Two edges
remain where they say more: Python's `re` lets a final newline pass `$`, and takes other
scripts' digits and letters as digits and word characters; JSON Schema's patterns do not.
"""

from __future__ import annotations

from typing import Any

from poller.timeformat import DURATION_FIELDS

VARIABLE_PATTERN = r"\$\{"
"""A string holding a ${NAME} is checked only once it is filled in, so it passes a pattern."""
DURATION_PATTERN = r"^\s*(?:\d*[1-9]\d*(?:\.\d+)?|\d+\.\d*[1-9]\d*)\s*[smhd]\s*$"
"""timeformat.DURATION_RE, greater than zero (which parse_duration checks after it)."""
CRON_PATTERN = r"^\s*\S+(?:\s+\S+){4}\s*$"
"""Five fields; whether they can fire is cronsim's to say."""
HTTP_URL_PATTERN = r"^https?://"


def text_matching(pattern: str) -> dict[str, Any]:
    """The JSON Schema of a string that matches `pattern` (a Python regex in the subset JSON
    Schema's ECMA dialect shares) or holds a ${NAME}."""
    return {"pattern": f"(?:{pattern})|{VARIABLE_PATTERN}"}


def given(name: str, **others: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of an object in which `name` is present and not null, and the fields
    `others` name (absent, or) as they say."""
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}, **others}}


INTERVAL_OBJECT: dict[str, Any] = {
    "properties": {unit: {"type": "number", "minimum": 0} for unit in DURATION_FIELDS},
    "additionalProperties": False,
    "minProperties": 1,
    "anyOf": [
        {"required": [unit], "properties": {unit: {"exclusiveMinimum": 0}}}
        for unit in DURATION_FIELDS
    ],
}
"""`every` as an object: known units, none negative, adding up to more than zero."""
WEEKDAY_NUMBER = {"minimum": 0, "maximum": 6}
JOB_SCHEDULE: dict[str, Any] = {
    "oneOf": [
        given("time"),
        given("every"),
        given("cron", days={"type": "null"}),
    ]
}
"""models.schedule_shape_error: exactly one of time, every and cron; days not with cron."""
JOB_IDENTITY: dict[str, Any] = {
    "anyOf": [
        {"required": [name], "properties": {name: {"minLength": 1}}} for name in ("id", "label")
    ]
}
"""A new job has an id, or a label to make one from; a replacement's id is in its URL."""
