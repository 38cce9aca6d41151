"""How deep JSON text nests, checked before it is parsed: config files and API bodies.

Deep nesting is no config anyone writes, and it breaks what reads it: json.loads and the
position finder recurse, and pydantic refuses to serialise past its depth limit (a job
whose `input` nested 300 levels passed validation, then ended the daemon at reload). It
only measures; the callers decide what to report.
"""

from __future__ import annotations

import re

MAX_DEPTH = 64
"""Objects and arrays inside each other; a real config nests about 10 deep."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = str.maketrans("", "", "".join(chr(c) for c in range(128) if chr(c) not in "{}[]"))
_INNERMOST = re.compile(r"\{\}|\[\]")
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def too_deep_at(text: str, max_depth: int = MAX_DEPTH) -> int | None:
    """The offset in `text` where nesting first passes `max_depth`, or None if it never does.

    Strings are blanked out, then innermost pairs are removed a level at a time (C-speed
    passes, as many as the real depth), so a large, shallow file costs a few milliseconds.
    """
    brackets = _STRING.sub("", text).translate(_NOT_BRACKET)
    for _ in range(max_depth):
        if not brackets:
            return None
        brackets, removed = _INNERMOST.subn("", brackets)
        if not removed:  # not JSON (unbalanced, a cut body): count the hard way
            return _first_excess(text, max_depth)
    return None if not brackets else _first_excess(text, max_depth)


def _first_excess(text: str, max_depth: int) -> int | None:
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token in ("[", "{"):
            depth += 1
            if depth > max_depth:
                return match.start()
        elif token in ("]", "}"):
            depth -= 1
    return None
