"""Change detection (SPEC §9): what a run's output is compared on, and how two compare.

An output is compared as its leaves: a map of dotted path → JSON scalar (an empty object or
list is a leaf too), limited to `paths` when given and without the `ignore`d ones. Two runs
compare equal when their leaves' fingerprints (SHA-256 of the sorted leaves as JSON) are
equal; the diff lists added, removed and changed paths. The baseline keeps the fingerprint
and, when not too large, the leaves themselves (redacted, as every stored thing is) for the
next diff: not the run's stored output, which is capped and redacted and would show false
changes or hide real ones. A new `paths`/`ignore` makes a new basis: its first run is a
baseline again, never a change. Pure data: the store keeps the Baseline (poller.monitor).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from poller.config.alerts import ChangeSpec
from poller.redaction import Redactor
from poller.run.paths import resolve
from poller.timeformat import json_default

DIFF_MAX_ENTRIES = 50
"""A diff lists this many paths, then one {"change": "omitted", "count": n} entry."""
VALUE_MAX_CHARS = 200
"""A diff's old and new values longer than this (as JSON) are cut."""
LEAVES_MAX_BYTES = 256 * 1024
"""Compared leaves larger than this are kept as a fingerprint only: a change is still
found, but its diff says only that the output changed."""

Leaves = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Baseline:
    """What the next run of a job is compared with."""

    basis: str
    """Fingerprint of what is compared (paths and ignore): another basis starts anew."""
    fingerprint: str
    leaves: Leaves | None
    """The compared leaves, redacted; None when larger than LEAVES_MAX_BYTES."""
    run_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "basis": self.basis,
            "fingerprint": self.fingerprint,
            "leaves": self.leaves,
            "run_id": self.run_id,
        }

    @classmethod
    def from_json(cls, value: Any) -> Baseline | None:
        """A stored baseline, or None for one this code cannot read (a new baseline then)."""
        if not isinstance(value, Mapping):
            return None
        leaves = value.get("leaves")
        basis, fingerprint, run_id = (
            value.get("basis"),
            value.get("fingerprint"),
            value.get("run_id"),
        )
        if not all(isinstance(v, str) for v in (basis, fingerprint, run_id)):
            return None
        return cls(
            str(basis),
            str(fingerprint),
            dict(leaves) if isinstance(leaves, dict) else None,
            str(run_id),
        )


@dataclass(frozen=True, slots=True)
class Comparison:
    changed: bool | None
    """None for a first run (or a new basis): the baseline."""
    diff: tuple[dict[str, Any], ...] | None
    baseline: Baseline
    """What the next run compares with (this run's)."""
    against: str | None = None
    """The run compared with (the baseline's), None for a new baseline."""


def basis_of(spec: bool | ChangeSpec) -> str:
    paths, ignore = ([], []) if spec is True or spec is False else (spec.paths, spec.ignore)
    text = json.dumps({"paths": paths, "ignore": ignore}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Compared:
    """The leaves a run is compared on, and the for_each items that failed in it."""

    leaves: Leaves
    failed_items: tuple[str, ...] = ()
    """Paths ("items.stock") of items that failed: compared as they were last time."""


def leaves_of(output: Mapping[str, Any] | None, spec: bool | ChangeSpec) -> Compared:
    """The compared leaves of an output: all of it, or its `paths`; never its `ignore`d ones.

    A for_each result is compared on its items' outputs, each under its key (or index when
    it has none: "items.stock.price"), so a reordered list is no change. Its bookkeeping
    (status, error, the counts) is not compared: an item that failed is a failure alert,
    and its answer counts as unchanged until it answers again.
    """
    data: Mapping[str, Any] = output or {}
    leaves: Leaves = {}
    failed: list[str] = []
    if isinstance(spec, ChangeSpec) and spec.paths:
        for path in spec.paths:
            found, value, _ = resolve(data, path)
            if found:
                _flatten(value, path, leaves, failed)
    else:
        _flatten(data, "", leaves, failed)
    if isinstance(spec, ChangeSpec) and spec.ignore:
        patterns = [pattern.split(".") for pattern in spec.ignore]
        leaves = {
            path: value
            for path, value in leaves.items()
            if not any(_covers(pattern, path.split(".")) for pattern in patterns)
        }
    return Compared(leaves, tuple(failed))


def compare(
    previous: Baseline | None,
    compared: Compared,
    spec: bool | ChangeSpec,
    run_id: str,
    redactor: Redactor,
) -> Comparison:
    """Compare a successful run's leaves with the job's baseline."""
    leaves = compared.leaves
    if compared.failed_items and previous is not None and previous.leaves is not None:
        leaves = _carry(previous.leaves, leaves, compared.failed_items)
    fingerprint = hashlib.sha256(_canonical(leaves).encode()).hexdigest()
    shown: Leaves = redactor.value(leaves)
    kept = shown if len(_canonical(shown).encode()) <= LEAVES_MAX_BYTES else None
    baseline = Baseline(basis_of(spec), fingerprint, kept, run_id)
    if previous is None or previous.basis != baseline.basis:
        return Comparison(None, None, baseline)
    if previous.fingerprint == fingerprint:
        return Comparison(False, (), previous, previous.run_id)
    if previous.leaves is None or kept is None:
        whole = {
            "path": "",
            "change": "changed",
            "old": "(too large to keep)",
            "new": "(too large to keep)",
        }
        return Comparison(True, (whole,), baseline, previous.run_id)
    return Comparison(True, diff_of(previous.leaves, shown), baseline, previous.run_id)


def diff_of(old: Leaves, new: Leaves) -> tuple[dict[str, Any], ...]:
    """Added, removed and changed paths in path order, capped at DIFF_MAX_ENTRIES."""
    entries: list[dict[str, Any]] = []
    for path in sorted(old.keys() | new.keys()):
        if path not in old:
            entries.append({"path": path, "change": "added", "old": None, "new": _cut(new[path])})
        elif path not in new:
            entries.append({"path": path, "change": "removed", "old": _cut(old[path]), "new": None})
        elif _canonical(old[path]) != _canonical(new[path]):
            entries.append(
                {"path": path, "change": "changed", "old": _cut(old[path]), "new": _cut(new[path])}
            )
    if len(entries) > DIFF_MAX_ENTRIES:
        omitted = len(entries) - DIFF_MAX_ENTRIES
        entries = [*entries[:DIFF_MAX_ENTRIES], {"path": "", "change": "omitted", "count": omitted}]
    return tuple(entries)


def paths_changed(diff: tuple[dict[str, Any], ...] | list[dict[str, Any]] | None) -> int:
    """How many paths a diff says changed, the omitted ones too."""
    return sum(
        int(entry.get("count", 0)) if entry.get("change") == "omitted" else 1
        for entry in diff or ()
    )


def changed_items(diff: tuple[dict[str, Any], ...] | None) -> int:
    """How many changes a diff counts (changes_detected): the for_each items it touches
    when every path is an item's ("items.stock.…"), else one."""
    if not diff:
        return 0
    items = set()
    for entry in diff:
        parts = str(entry.get("path", "")).split(".")
        if len(parts) < 2 or parts[0] != "items" or entry.get("change") == "omitted":
            return 1
        items.add(parts[1])
    return len(items)


FAN_OUT_ITEM_KEYS = frozenset({"index", "key", "status", "output", "error"})
FAN_OUT_COUNTS = ("succeeded", "failed")


def _flatten(value: Any, path: str, into: Leaves, failed: list[str]) -> None:
    def at(key: object) -> str:
        return f"{path}.{key}" if path else str(key)

    if _is_fan_out(value):
        keys = [item.get("key") for item in value]
        by_key = all(isinstance(k, str) and k for k in keys) and len(set(keys)) == len(keys)
        for item, key in zip(value, keys, strict=True):
            where = at(key if by_key else item["index"])
            if item["status"] == "success":
                _flatten(item.get("output"), where, into, failed)
            else:
                failed.append(where)
    elif isinstance(value, Mapping) and value:
        counts = FAN_OUT_COUNTS if _is_fan_out(value.get("items")) else ()
        for key, item in value.items():
            if key not in counts:
                _flatten(item, at(key), into, failed)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            _flatten(item, at(index), into, failed)
    else:
        into[path] = value


def _is_fan_out(value: Any) -> bool:
    """A for_each step's `items` (poller.run.chain): [{index, key, status, output | error}]."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(item, Mapping)
            and item.keys() <= FAN_OUT_ITEM_KEYS
            and isinstance(item.get("index"), int)
            and item.get("status") in ("success", "failed")
            for item in value
        )
    )


def _carry(old: Leaves, new: Leaves, failed_items: tuple[str, ...]) -> Leaves:
    """`new`, with the leaves of items that failed now taken from `old`."""
    prefixes = tuple(f"{item}." for item in failed_items)
    carried = {
        path: value
        for path, value in old.items()
        if path in failed_items or path.startswith(prefixes)
    }
    return {**new, **carried}


def _covers(pattern: list[str], parts: list[str]) -> bool:
    """Whether an ignore pattern names this leaf or one of its parents ("*": any one part)."""
    if len(pattern) > len(parts):
        return False
    return all(want in ("*", part) for want, part in zip(pattern, parts, strict=False))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=json_default)


def _cut(value: Any) -> Any:
    text = _canonical(value)
    if len(text) <= VALUE_MAX_CHARS:
        return value
    return text[: VALUE_MAX_CHARS - 1] + "…"
