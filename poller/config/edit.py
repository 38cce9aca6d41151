"""Job changes from the API written back to config.json: validated like a file edit, atomic.

An edit reads the file, applies one job-level change to its JSON, validates the whole new
text with `parse_config`, and replaces the file (temp file, fsync, rename). Only the edited
job's text is rewritten; every other byte of the file stays as the operator wrote it. A file
changed by someone else between the read and the rename is read again and the change
re-applied, so concurrent edits never lose one another. Applying the file is the daemon's
normal reload, not this module's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from poller.config.load import BOM, parse_config
from poller.config.models import Config, slugify
from poller.errors import ConfigError, PollerError, Problem

MAX_ATTEMPTS = 5
"""An edit whose file keeps changing underneath it this many times is refused."""
LINE_WIDTH = 100
"""A rewritten job keeps a nested list or object on one line up to this width."""

Action = Literal["created", "updated", "deleted", "paused", "resumed"]
_WS = re.compile(r"[ \t\n\r]*")
_BLANK = re.compile(r"[ \t]*")
_INDENT = re.compile(r"^([ \t]+)\S", re.MULTILINE)


class JobNotFoundError(PollerError):
    def __init__(self, job_id: str, known: list[str]) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r}; jobs: {', '.join(known) or 'none'}")


class JobExistsError(PollerError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"a job with id {job_id!r} already exists; use PUT /jobs/{job_id}")


class ConfigConflictError(PollerError):
    """The file cannot be edited now: it is invalid as it stands, or keeps changing."""

    def __init__(self, path: Path, reason: str, problems: tuple[Problem, ...] = ()) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path.name}: {reason}")


class ConfigChangedError(PollerError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path.name} changed while it was being edited")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The file as read: its text, a digest to detect a change, and its mode to keep."""

    text: str
    digest: str
    mode: int
    bom: bool = False
    """The file starts with a UTF-8 byte order mark: `text` is without it, writes keep it."""


@dataclass(frozen=True, slots=True)
class Change:
    """One change to the jobs list: insert at, replace at, or delete at `index`."""

    kind: Literal["insert", "replace", "delete", "enabled"]
    """"enabled": only the job's "enabled" member is written (or removed, to resume), so a
    pause and a resume give back the file's bytes."""
    index: int
    job: dict[str, Any] | None = None


Decide = Callable[[list[Any], list[str]], tuple[str, Change | None]]
"""Given the jobs list and the job ids (same order): the job id and the change, or None."""


@dataclass(frozen=True, slots=True)
class EditResult:
    job_id: str
    action: Action
    changed: bool
    config: Config
    """The config as it now stands in the file (validated)."""


class ConfigEditor:
    """Edits one config file; edits from this process are serialised by a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def create_job(self, body: dict[str, Any]) -> EditResult:
        def change(jobs: list[Any], ids: list[str]) -> tuple[str, Change | None]:
            job_id = _intended_id(body)
            if job_id in ids:
                raise JobExistsError(job_id)
            return job_id, Change("insert", len(jobs), dict(body))

        return self.edit("created", change)

    def update_job(self, job_id: str, body: dict[str, Any]) -> EditResult:
        """Replace a job's whole definition; its id stays (an id in the body must match)."""

        def change(jobs: list[Any], ids: list[str]) -> tuple[str, Change | None]:
            index = _index_of(job_id, ids)
            if "id" in body and body["id"] != job_id:
                raise ConfigError(
                    [
                        Problem(
                            self.path.name,
                            f"jobs[{index}].id",
                            f"expected {job_id!r} as in the URL (to rename, delete and create)",
                            value=body["id"],
                            has_value=True,
                        )
                    ]
                )
            new = body if "id" in body else {"id": job_id, **body}
            if new == jobs[index]:
                return job_id, None
            return job_id, Change("replace", index, dict(new))

        return self.edit("updated", change)

    def delete_job(self, job_id: str) -> EditResult:
        def change(jobs: list[Any], ids: list[str]) -> tuple[str, Change | None]:
            return job_id, Change("delete", _index_of(job_id, ids))

        return self.edit("deleted", change)

    def set_enabled(self, job_id: str, enabled: bool) -> EditResult:
        """Pause (enabled false) or resume (enabled true) a job; a no-op when already so."""

        def change(jobs: list[Any], ids: list[str]) -> tuple[str, Change | None]:
            index = _index_of(job_id, ids)
            job = dict(jobs[index])
            if job.get("enabled", True) == enabled:
                return job_id, None
            if enabled:
                del job["enabled"]  # true is the default: resuming leaves no trace
            else:
                job["enabled"] = False
            return job_id, Change("enabled", index, job)

        return self.edit("resumed" if enabled else "paused", change)

    def edit(self, action: Action, decide: Decide) -> EditResult:
        """Read, change, validate, write; again from the start if the file changed meanwhile.

        Raises:
            JobNotFoundError, JobExistsError: from `decide`.
            ConfigError: the changed file would be invalid (the file is left untouched).
            ConfigConflictError: the file is invalid as it stands, or kept changing.
        """
        with self._lock:
            for _ in range(MAX_ATTEMPTS):
                snapshot = self.read()
                current = self._current(snapshot)
                raw = json.loads(snapshot.text)
                jobs = raw if isinstance(raw, list) else raw.get("jobs", [])
                job_id, change = decide(jobs, [job.id for job in current.jobs])
                if change is None:
                    return EditResult(job_id, action, False, current)
                text = render(snapshot.text, raw, change)
                config = parse_config(text, self.path)
                try:
                    self.write(snapshot, text)
                except ConfigChangedError:
                    continue
                return EditResult(job_id, action, True, config)
        raise ConfigConflictError(
            self.path, f"changed by someone else {MAX_ATTEMPTS} times during the edit; try again"
        )

    def read(self) -> Snapshot:
        try:
            data = self.path.read_bytes()
            mode = self.path.stat().st_mode & 0o7777
        except OSError as err:
            raise ConfigConflictError(self.path, f"cannot be read ({err})") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigConflictError(self.path, f"is not UTF-8 ({err})") from None
        return Snapshot(text.removeprefix(BOM), _digest(data), mode, text.startswith(BOM))

    def write(self, snapshot: Snapshot, text: str) -> None:
        """Replace the file with `text` atomically, unless it changed since `snapshot`.

        The content is compared again right before the rename, so an outside write can
        only slip in during that one system call.
        """
        if self._digest_now() != snapshot.digest:
            raise ConfigChangedError(self.path)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write(BOM + text if snapshot.bom else text)
                handle.flush()
                os.fsync(handle.fileno())
            temp.chmod(snapshot.mode)
            if self._digest_now() != snapshot.digest:
                raise ConfigChangedError(self.path)
            temp.replace(self.path)
        finally:
            temp.unlink(missing_ok=True)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a power cut
        finally:
            os.close(folder)

    def _current(self, snapshot: Snapshot) -> Config:
        try:
            return parse_config(snapshot.text, self.path)
        except ConfigError as err:
            raise ConfigConflictError(
                self.path,
                "is invalid as it stands (the daemon keeps its last good config); "
                "fix the file first",
                err.problems,
            ) from None

    def _digest_now(self) -> str:
        try:
            return _digest(self.path.read_bytes())
        except OSError:
            return ""


def render(text: str, raw: Any, change: Change) -> str:
    """The file's new text: `change` spliced into `text`, or the whole document re-rendered
    when the splice cannot be made (no "jobs" key yet) or would not give the right JSON."""
    expected = apply_change(raw, change)
    unit = indent_unit(text)
    try:
        spliced = splice(text, change, unit)
        if spliced is not None and json.loads(spliced) == expected:
            return spliced
    except (ValueError, IndexError):  # a layout the splice does not know: write it anew
        pass
    return json.dumps(expected, indent=unit, ensure_ascii=False) + "\n"


def apply_change(raw: Any, change: Change) -> Any:
    """The parsed document with `change` applied (a copy; `raw` is left as it was)."""
    doc = copy.deepcopy(raw)
    jobs = doc if isinstance(doc, list) else doc.setdefault("jobs", [])
    if change.kind == "insert":
        jobs.insert(change.index, change.job)
    elif change.kind in ("replace", "enabled"):
        jobs[change.index] = change.job
    else:
        del jobs[change.index]
    return doc


def splice(text: str, change: Change, unit: str) -> str | None:
    """Rewrite only the text of the changed job; None when the file has no jobs array."""
    start = _jobs_array(text)
    if start is None:
        return None
    spans, close = _element_spans(text, start)
    if change.kind == "delete":
        begin, end = spans[change.index]
        if len(spans) == 1:
            return text[: start + 1] + text[close:]
        if change.index + 1 < len(spans):
            return text[:begin] + text[spans[change.index + 1][0] :]
        return text[: spans[change.index - 1][1]] + text[end:]
    assert change.job is not None
    if change.kind == "enabled":
        return _set_enabled(text, spans[change.index][0], change.job.get("enabled", True))
    if change.kind == "replace":
        begin, end = spans[change.index]
        return text[:begin] + _dump(change.job, _indent_at(text, begin, unit), unit) + text[end:]
    if spans:
        last_end = spans[-1][1]
        indent = _indent_at(text, spans[-1][0], unit)
        job_text = _dump(change.job, indent, unit)
        return text[:last_end] + ",\n" + indent + job_text + text[last_end:]
    outer = _line_indent(text, start)
    job_text = _dump(change.job, outer + unit, unit)
    return text[: start + 1] + "\n" + outer + unit + job_text + "\n" + outer + text[close:]


def _set_enabled(text: str, start: int, enabled: bool) -> str:
    """The job object at `start` with `"enabled": false` written, or the member removed.

    A pause replaces an existing value in place, or adds the member after the last one,
    spaced as the last one is; a resume removes exactly that text again.
    """
    members = _member_spans(text, start)
    found = [i for i, member in enumerate(members) if member[0] == "enabled"]
    if not enabled:
        if found:
            _, _, value_start, value_end = members[found[0]]
            return text[:value_start] + "false" + text[value_end:]
        if not members:
            return text[: start + 1] + '"enabled": false' + text[start + 1 :]
        _, key_start, _, _ = members[-1]
        before = members[-2][3] if len(members) > 1 else start + 1
        between = text[before:key_start]  # the last member's separator: " , " or ",\n    "
        gap = between[between.find(",") + 1 :]
        end = members[-1][3]
        return text[:end] + "," + gap + '"enabled": false' + text[end:]
    index = found[0]
    _, key_start, _, value_end = members[index]
    if index > 0:  # from the end of the member before: its comma, the gap, this member
        return text[: members[index - 1][3]] + text[value_end:]
    if len(members) > 1:
        return text[:key_start] + text[members[1][1] :]
    return text[: start + 1] + text[_skip(text, value_end) :]


def _member_spans(text: str, start: int) -> list[tuple[str, int, int, int]]:
    """(key, key start, value start, value end) of each member of the object at `start`."""
    decoder = json.JSONDecoder()
    members = []
    pos = _skip(text, start + 1)
    while text[pos] != "}":
        key, after_key = decoder.raw_decode(text, pos)
        value_start = _skip(text, _skip(text, after_key) + 1)  # past the ':'
        _, value_end = decoder.raw_decode(text, value_start)
        members.append((key, pos, value_start, value_end))
        pos = _skip(text, value_end)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return members


def indent_unit(text: str) -> str:
    """The file's indentation step (its smallest indentation), two spaces by default."""
    found = [m.group(1) for m in _INDENT.finditer(text)]
    return min(found, key=len) if found else "  "


def _dump(value: Any, indent: str, unit: str, used: int = 0, top: bool = True) -> str:
    """JSON for a value whose first line is already `used` characters wide: a nested list
    or object stays on one line when it fits within LINE_WIDTH, as people write them."""
    compact = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if not isinstance(value, (dict, list)) or not value:
        return compact
    if not top and len(indent) + used + len(compact) <= LINE_WIDTH:
        return compact
    inner = indent + unit
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            head = json.dumps(key, ensure_ascii=False) + ": "
            items.append(inner + head + _dump(item, inner, unit, len(head) + 1, top=False))
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    lines = [inner + _dump(item, inner, unit, 1, top=False) for item in value]
    return "[\n" + ",\n".join(lines) + "\n" + indent + "]"


def _line_indent(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    match = _BLANK.match(text, line_start)
    return match.group(0) if match else ""


def _indent_at(text: str, pos: int, unit: str) -> str:
    """The indentation for an element at `pos`: its own when it opens its line, else deeper."""
    line_start = text.rfind("\n", 0, pos) + 1
    before = text[line_start:pos]
    return before if not before.strip() else _line_indent(text, pos) + unit


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _jobs_array(text: str) -> int | None:
    """Where the jobs array's '[' is: the top level (a bare list) or the last "jobs" key."""
    decoder = json.JSONDecoder()
    pos = _skip(text, 0)
    if text[pos] == "[":
        return pos
    found = None
    pos = _skip(text, pos + 1)
    while text[pos] != "}":
        key, pos = decoder.raw_decode(text, pos)
        pos = _skip(text, _skip(text, pos) + 1)  # past the ':'
        if key == "jobs" and text[pos] == "[":
            found = pos
        _, pos = decoder.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return found


def _element_spans(text: str, start: int) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of each element of the array opening at `start`, and where its ']' is."""
    decoder = json.JSONDecoder()
    spans: list[tuple[int, int]] = []
    pos = _skip(text, start + 1)
    while text[pos] != "]":
        _, end = decoder.raw_decode(text, pos)
        spans.append((pos, end))
        pos = _skip(text, end)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return spans, pos


def _intended_id(body: dict[str, Any]) -> str:
    job_id, label = body.get("id"), body.get("label")
    if isinstance(job_id, str) and job_id:
        return job_id
    return slugify(label) if isinstance(label, str) and label else ""


def _index_of(job_id: str, ids: list[str]) -> int:
    try:
        return ids.index(job_id)
    except ValueError:
        raise JobNotFoundError(job_id, ids) from None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
