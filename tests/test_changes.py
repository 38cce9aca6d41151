"""Change detection's comparison (poller.run.changes), on the outputs a for_each step makes:
items are compared under their keys, their bookkeeping is not compared, and an item that
failed counts as unchanged until it answers again. Pure data: no store, no chain."""

from __future__ import annotations

from typing import Any

from poller.config.alerts import ChangeSpec
from poller.redaction import Redactor
from poller.run.changes import Baseline, Comparison, changed_items, compare, leaves_of

REDACTOR = Redactor()


def fan_out(*items: tuple[str, dict[str, Any] | str]) -> dict[str, Any]:
    """A for_each step's output: (key, output) for a success, (key, "error text") for a failure."""
    done = []
    for index, (key, outcome) in enumerate(items):
        if isinstance(outcome, str):
            done.append({"index": index, "key": key, "status": "failed", "error": outcome})
        else:
            done.append({"index": index, "key": key, "status": "success", "output": outcome})
    failed = sum(1 for item in done if item["status"] == "failed")
    return {"items": done, "succeeded": len(done) - failed, "failed": failed}


class Job:
    """One job's successive runs, each compared with the baseline the one before left."""

    def __init__(self, spec: bool | ChangeSpec = True) -> None:
        self.spec = spec
        self.baseline: Baseline | None = None
        self.runs = 0

    def run(self, output: dict[str, Any]) -> Comparison:
        self.runs += 1
        comparison = compare(
            self.baseline, leaves_of(output, self.spec), self.spec, f"r{self.runs}", REDACTOR
        )
        if comparison.changed is not False:
            self.baseline = comparison.baseline
        return comparison


def test_items_are_compared_by_key_so_a_reordered_list_is_no_change() -> None:
    job = Job()
    assert job.run(fan_out(("prices", {"eur": 1}), ("stock", {"n": 5}))).changed is None
    assert job.run(fan_out(("stock", {"n": 5}), ("prices", {"eur": 1}))).changed is False
    changed = job.run(fan_out(("stock", {"n": 6}), ("prices", {"eur": 1})))
    assert changed.changed is True
    assert changed.diff == ({"path": "items.stock.n", "change": "changed", "old": 5, "new": 6},)
    assert changed_items(changed.diff) == 1


def test_an_item_that_fails_is_no_change_and_its_recovery_with_the_same_answer_neither() -> None:
    job = Job()
    job.run(fan_out(("prices", {"eur": 1}), ("stock", {"n": 5})))
    # The failure is a failure alert's business: the counts and the error are not compared.
    assert job.run(fan_out(("prices", {"eur": 1}), ("stock", "HTTP 503"))).changed is False
    assert job.run(fan_out(("prices", {"eur": 1}), ("stock", "timeout"))).changed is False
    assert job.run(fan_out(("prices", {"eur": 1}), ("stock", {"n": 5}))).changed is False
    # A failed item keeps its last answer while another item's change is reported.
    changed = job.run(fan_out(("prices", {"eur": 2}), ("stock", "HTTP 503")))
    assert [e["path"] for e in changed.diff or ()] == ["items.prices.eur"]
    recovered = job.run(fan_out(("prices", {"eur": 2}), ("stock", {"n": 7})))
    assert recovered.diff == ({"path": "items.stock.n", "change": "changed", "old": 5, "new": 7},)


def test_items_without_unique_keys_are_compared_by_index_and_added_ones_are_named() -> None:
    job = Job()
    job.run(fan_out(("same", {"v": 1}), ("same", {"v": 2})))
    grown = job.run(fan_out(("same", {"v": 1}), ("same", {"v": 3}), ("other", {"v": 4})))
    assert [(e["path"], e["change"]) for e in grown.diff or ()] == [
        ("items.1.v", "changed"),
        ("items.2.v", "added"),
    ]
    assert changed_items(grown.diff) == 2


def test_ignored_item_fields_and_chosen_paths_narrow_what_is_compared() -> None:
    job = Job(ChangeSpec(ignore=["items.*.fetched_at"]))
    job.run(fan_out(("a", {"v": 1, "fetched_at": "08:00"})))
    assert job.run(fan_out(("a", {"v": 1, "fetched_at": "09:00"}))).changed is False
    assert job.run(fan_out(("a", {"v": 2, "fetched_at": "10:00"}))).changed is True

    chosen = Job(ChangeSpec(paths=["summary.total"]))
    chosen.run({"summary": {"total": 3, "at": "08:00"}, "noise": 1})
    assert chosen.run({"summary": {"total": 3, "at": "09:00"}, "noise": 2}).changed is False


def test_a_new_basis_is_a_baseline_not_a_change() -> None:
    job = Job()
    job.run({"a": 1, "b": 1})
    job.spec = ChangeSpec(paths=["a"])
    assert job.run({"a": 2, "b": 2}).changed is None
    assert job.run({"a": 2, "b": 3}).changed is False
