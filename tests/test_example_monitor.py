"""README's monitoring walk-through, as a reader runs it: the shipped examples/monitor.json
and its stand-in sources, `python app.py run sources --alerts`, a real SMTP server
(aiosmtpd) on 127.0.0.1. Only the port differs: the test's server takes a free one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.daemonproc import REPO, app
from tests.receivers import Mail, MailReceiver

CONFIG = "examples/monitor.json"


def copy_examples(folder: Path, port: int) -> Path:
    shutil.copytree(REPO / "examples", folder / "examples", ignore=shutil.ignore_patterns("__py*"))
    config = folder / CONFIG
    raw = json.loads(config.read_text())
    raw["settings"]["alerts"]["mail"]["port"] = port
    config.write_text(json.dumps(raw, indent=2))
    return folder / "examples" / "sources"


def run_sources(folder: Path) -> dict[str, Any]:
    done = app("run", "sources", "--alerts", "--config", CONFIG, cwd=folder)
    assert done.returncode == 0, done.stderr
    record: dict[str, Any] = json.loads(done.stdout)
    return record


def body(mail: Mail) -> str:
    return str(mail.message.get_content()).replace("\r\n", "\n")


def test_the_readme_example_mails_a_change_a_failure_and_one_recovery(tmp_path: Path) -> None:
    with MailReceiver() as mail:
        sources = copy_examples(tmp_path, mail.port)

        baseline = run_sources(tmp_path)
        assert baseline["status"] == "success" and baseline["changed"] is None
        assert [item["key"] for item in baseline["output"]["items"]] == [
            "prices",
            "stock",
            "catalog",
        ]  # archive is weekly: left out by `when`
        assert baseline["items_processed"] == 3 and baseline["alerts"] == []

        same = run_sources(tmp_path)  # only fetched_at differs, and it is ignored
        assert same["changed"] is False and same["alerts"] == []

        prices = sources / "prices.json"
        prices.write_text(prices.read_text().replace('"apple": 1.2', '"apple": 1.5'))
        changed = run_sources(tmp_path)
        assert changed["changed"] is True and changed["changes_detected"] == 1
        assert changed["diff"] == [
            {
                "path": "items.prices.answer.prices.apple",
                "change": "changed",
                "old": 1.2,
                "new": 1.5,
            }
        ]
        [change] = mail.wait_for(1)
        assert change.message["Subject"] == "Poller: job sources: the output changed"
        assert "items.prices.answer.prices.apple: 1.2 → 1.5" in body(change)

        (sources / "stock.json").rename(tmp_path / "stock.json")
        failing = run_sources(tmp_path)
        assert failing["status"] == "success"  # one item of three failed
        assert (failing["items_succeeded"], failing["items_failed"]) == (2, 1)
        assert failing["changed"] is False  # a failed item is no change
        [_, failure] = mail.wait_for(2)
        assert failure.message["Subject"] == "Poller: job sources: 1 of 3 item(s) failed"
        assert "source stock did not answer" in body(failure)

        run_sources(tmp_path)  # still failing
        (tmp_path / "stock.json").rename(sources / "stock.json")
        recovered = run_sources(tmp_path)
        assert recovered["items_failed"] == 0 and recovered["changed"] is False
        run_sources(tmp_path)
        mails = mail.wait_for(4)
    assert [m.message["Subject"] for m in mails] == [
        "Poller: job sources: the output changed",
        "Poller: job sources: 1 of 3 item(s) failed",
        "Poller: job sources: 1 of 3 item(s) failed",
        "Poller: job sources recovered",
    ]
    assert all(m.rcpt_tos == ("ops@localhost",) for m in mails)
