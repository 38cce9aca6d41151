"""The chain entries `files` and `kafka` (SPEC §10): a scheduled job lists a source and
publishes what it found, or feeds polling jobs to the workers, with no worker of its own.
Runs are real `python app.py run` subprocesses against a real Tansu broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.daemonproc import run_app, write
from tests.kafkabroker import Topics
from tests.workerproc import MakeWorker


def files_job(folder: Path, topic: str, *then: list[dict[str, Any]]) -> dict[str, Any]:
    """List `folder`'s CSV files, publish each as one message keyed by its path."""
    return {
        "id": "scan",
        "every": "1h",
        "integrationIDs": [
            [{"files": {"source_config": {"source_type": "local", "path": str(folder)},
                        "file_pattern": "*.csv"}}],
            [{"for_each": "files", "key": "path", "max_parallel": 2,
              "steps": [[{"kafka": {"topic": topic, "key": "path"}}]]}],
            *then,
        ],
    }  # fmt: skip


def config_folder(tmp_path: Path, topics: Topics, *jobs: dict[str, Any], **kafka: Any) -> Path:
    folder = tmp_path / "daemon"
    folder.mkdir()
    (folder / "steps.py").write_text(
        "import pathlib\n"
        "def gate(data, context):\n"
        "    if (pathlib.Path(__file__).parent / 'closed').exists():\n"
        "        raise RuntimeError('the gate is closed')\n"
        "    return {}\n"
    )
    write(folder, {"settings": {"kafka": topics.kafka_settings(**kafka)}, "jobs": list(jobs)})
    return folder


def run(folder: Path, job_id: str = "scan", *args: str) -> dict[str, Any]:
    done = run_app(folder, "run", job_id, *args)
    assert done.returncode in (0, 1), done.stderr
    record: dict[str, Any] = json.loads(done.stdout)
    return record


def test_a_job_lists_a_source_and_publishes_only_the_new_files(
    tmp_path: Path, topics: Topics
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for name in ("a.csv", "b.csv", "skip.txt"):
        (source / name).write_text(name)
    folder = config_folder(tmp_path, topics, files_job(source, topics.events))

    first = run(folder)
    assert first["status"] == "success", first["reason"]
    assert [s["id"] for s in first["steps"]] == [
        "files:local *.csv",
        "for_each:files",
    ]
    assert first["items_processed"] == 2 and first["items_failed"] == 0
    sent = {m["key"]: m["value"] for m in topics.read(topics.events, 2)}
    assert sorted(sent) == ["a.csv", "b.csv"]
    assert sent["a.csv"]["source"] == f"local://{source}" and sent["a.csv"]["job_id"] == "scan"
    assert sent["a.csv"]["size"] == 5 and len(sent["a.csv"]["event_id"]) == 32

    again = run(folder)  # nothing new: the listing of the last successful run says so
    assert again["status"] == "success" and again["items_processed"] == 0

    (source / "c.csv").write_text("c")
    third = run(folder)
    assert third["items_processed"] == 1
    assert [m["key"] for m in topics.read(topics.events, 3)][2:] == ["c.csv"]


def test_a_failed_run_keeps_no_listing_so_its_files_come_again(
    tmp_path: Path, topics: Topics
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.csv").write_text("a")
    job = files_job(source, topics.events, [{"function": "steps:gate"}])
    folder = config_folder(tmp_path, topics, job)
    (folder / "closed").write_text("")
    failed = run(folder)
    assert failed["status"] == "failed" and "the gate is closed" in failed["reason"]
    (folder / "closed").unlink()
    retried = run(folder)
    assert retried["status"] == "success" and retried["items_processed"] == 1  # again
    assert run(folder)["items_processed"] == 0  # kept this time
    assert [m["key"] for m in topics.read(topics.events, 2)] == ["a.csv", "a.csv"]


def test_a_scheduled_job_feeds_polling_jobs_to_the_workers(
    tmp_path: Path, topics: Topics, workers: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "feed-token-6a1f09"
    monkeypatch.setenv("FEED_TOKEN", token)  # app.py run inherits it
    source = tmp_path / "in"
    source.mkdir()
    (source / "x.csv").write_text("x")
    feeder = {
        "id": "feed",
        "every": "1h",
        "input": {
            "job_id": "from-the-daemon",
            "source_config": {"source_type": "local", "path": str(source)},
            "file_pattern": "*.csv",
            "metadata": {"token": "${FEED_TOKEN}", "team": "data"},
        },
        "integrationIDs": [[{"kafka": {"topic": topics.polling, "key": "job_id"}}]],
    }
    folder = config_folder(tmp_path, topics, feeder)
    worker = workers()
    record = run(folder, "feed")
    assert record["status"] == "success", record["reason"]
    assert record["output"]["topic"] == topics.polling and record["output"]["offset"] >= 0
    [event] = topics.read(topics.events, 1)
    assert (event["value"]["job_id"], event["value"]["name"]) == ("from-the-daemon", "x.csv")
    worker.wait_log("published 1 event(s)")
    # The message left Poller masked: the token the config filled in never reached Kafka.
    [job] = topics.read(topics.polling, 1)
    assert job["value"]["metadata"] == {"token": "**********", "team": "data"}
    assert token not in json.dumps(job) + json.dumps(event)


def test_a_broker_that_does_not_answer_fails_the_entry_and_a_dry_run_publishes_nothing(
    tmp_path: Path, topics: Topics
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.csv").write_text("a")
    folder = config_folder(
        tmp_path,
        topics,
        files_job(source, topics.events),
        bootstrap_servers="127.0.0.1:1",
        delivery_timeout_seconds=1,
    )
    failed = run(folder)
    assert failed["status"] == "failed" and failed["items_failed"] == 1
    assert f"publishing to {topics.events} failed" in failed["reason"]
    again = run(folder)  # the failed run kept no listing: the file is still new
    assert again["items_processed"] == 1

    dry = json.loads((folder / "config.json").read_text())
    dry["jobs"][0]["dry_run"] = True
    dry["settings"]["kafka"]["bootstrap_servers"] = topics.bootstrap
    write(folder, dry)
    record = run(folder)
    assert record["dry_run"] is True and record["items_processed"] == 1
    assert topics.count(topics.events, settle=0.5) == 0
