"""Where each value of a JSON document starts, so config errors can name a line and column.

It only scans text that `json.loads` already accepted; it never decides validity itself.
"""

from __future__ import annotations

import json
import re

PathKey = tuple[str | int, ...]

_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(r"[^,\]\}\s]+")


def locate(text: str) -> dict[PathKey, tuple[int, int]]:
    """Map each JSON path to the 1-based (line, column) of its key, or of the value in a list."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    positions: dict[PathKey, int] = {}

    def skip(pos: int) -> int:
        match = _WS.match(text, pos)
        return match.end() if match else pos

    def value(pos: int, path: PathKey) -> int:
        pos = skip(pos)
        char = text[pos]
        if char == "{":
            pos = skip(pos + 1)
            if text[pos] == "}":
                return pos + 1
            while True:
                pos = skip(pos)
                key_match = _STRING.match(text, pos)
                assert key_match is not None, "locate() needs valid JSON"
                key = json.loads(key_match.group(0))
                positions[(*path, key)] = pos
                pos = skip(key_match.end()) + 1  # past ':'
                pos = skip(value(pos, (*path, key)))
                if text[pos] == "}":
                    return pos + 1
                pos += 1  # past ','
        if char == "[":
            pos = skip(pos + 1)
            if text[pos] == "]":
                return pos + 1
            index = 0
            while True:
                pos = skip(pos)
                positions.setdefault((*path, index), pos)
                pos = skip(value(pos, (*path, index)))
                if text[pos] == "]":
                    return pos + 1
                pos += 1
                index += 1
        match = (_STRING if char == '"' else _SCALAR).match(text, pos)
        assert match is not None, "locate() needs valid JSON"
        return match.end()

    value(0, ())
    return {path: line_col(line_starts, offset) for path, offset in positions.items()}


def line_col(line_starts: list[int], offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    low, high = 0, len(line_starts) - 1
    while low < high:
        mid = (low + high + 1) // 2
        if line_starts[mid] <= offset:
            low = mid
        else:
            high = mid - 1
    return low + 1, offset - line_starts[low] + 1


class Locations:
    """The positions of a document's values, computed on first use: only errors need them."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._positions: dict[PathKey, tuple[int, int]] | None = None

    def find(self, path: PathKey) -> tuple[int, int]:
        """(line, column) of `path`, else of its nearest located ancestor, else (1, 1)."""
        if self._positions is None:
            self._positions = locate(self._text)
        while path:
            if path in self._positions:
                return self._positions[path]
            path = path[:-1]
        return 1, 1
