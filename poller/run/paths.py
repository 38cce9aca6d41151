"""Dotted paths into JSON data, the one resolver behind a condition's `token` and a bearer
login's `token_field`: object keys, and list indexes as integers (`items.0.id`; `items.-1` is
the last item). A key that contains a dot cannot be addressed.

Data that is not there is an answer, never an exception: `resolve` says where the walk
stopped, in words a person can read in a run record or an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_INDEX_RE = re.compile(r"^-?[0-9]+$")


def resolve(data: Any, path: str) -> tuple[bool, Any, str]:
    """Follow `path` into `data`: (found, value, why it was not found)."""
    node = data
    walked = ""
    for part in path.split("."):
        where = walked or "the input"
        if isinstance(node, Mapping):
            if part not in node:
                return False, None, f'{where} has no key "{part}"'
            node = node[part]
        elif isinstance(node, list):
            if not _INDEX_RE.match(part):
                return False, None, f"{where} is a list; {part!r} is not an index"
            index = int(part)
            if not -len(node) <= index < len(node):
                items = "1 item" if len(node) == 1 else f"{len(node)} items"
                return False, None, f"{where} has {items}, no index {index}"
            node = node[index]
        else:
            return False, None, f"{where} is {kind_of(node)}, not an object or a list"
        walked = f"{walked}.{part}" if walked else part
    return True, node, ""


def kind_of(value: Any) -> str:
    """A JSON value's kind in words: "null", "a number", "an object", …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"
