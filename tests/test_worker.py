"""`python app.py worker` end to end (SPEC §10): a real Tansu broker, real worker
subprocesses, `app.py kafka` commands, and local and dummy sources on real folders."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from poller.store import SqliteStore
from tests.daemonproc import REPO, wait_until
from tests.kafkabroker import Topics, create_topics, free_port, start_broker, stop_broker
from tests.receivers import unused_port
from tests.workerproc import MakeWorker, WorkerProcess


def kafka_app(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), "kafka", *args, "--config", "config.json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


def local_job(job_id: str, folder: Path, pattern: str = "*.csv", **fields: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "source_config": {"source_type": "local", "path": str(folder)},
        "file_pattern": pattern,
        "metadata": {"team": "data"},
        **fields,
    }


def test_the_shipped_job_gives_one_event_per_sample_file_and_a_repoll_none(
    workers: MakeWorker, topics: Topics
) -> None:
    worker = workers()
    pushed = kafka_app(worker.folder, "push-job", str(REPO / "examples" / "polling-job.json"))
    assert pushed.returncode == 0, pushed.stderr
    assert re.fullmatch(
        rf"pushed job dummy-csv to {topics.polling} \(partition \d, offset 0\)\n", pushed.stdout
    )
    events = topics.read(topics.events, 3)
    values = sorted((e["value"] for e in events), key=lambda v: v["path"])
    assert [v["name"] for v in values] == [f"sample_data_{i}.csv" for i in (1, 2, 3)]
    dummy = REPO / "dummy_data"
    for value, event in zip(values, sorted(events, key=lambda e: e["value"]["path"]), strict=True):
        assert re.fullmatch(r"[0-9a-f]{32}", value["event_id"])
        assert event["key"] == f"dummy://{dummy}|{value['path']}"
        assert value["size"] == (dummy / value["path"]).stat().st_size
        assert (value["job_id"], value["source_type"], value["source"]) == (
            "dummy-csv",
            "dummy",
            f"dummy://{dummy}",
        )
        assert value["metadata"] == {"team": "data", "dataset": "samples"}
        assert value["modified_at"].endswith("+00:00") and value["etag"] is None
    worker.wait_log("published 3 event(s)")

    assert (
        kafka_app(worker.folder, "push-job", str(REPO / "examples/polling-job.json")).returncode
        == 0
    )
    worker.wait_log("published 0 event(s)")  # nothing new: the listing state says so
    tailed = kafka_app(worker.folder, "tail", topics.events, "--idle-seconds", "2")
    assert tailed.returncode == 0, tailed.stderr
    assert [json.loads(line)["value"]["event_id"] for line in tailed.stdout.splitlines()] == [
        e["value"]["event_id"] for e in events
    ]


def test_a_repoll_publishes_only_new_and_changed_files_and_emit_all_every_match(
    workers: MakeWorker, topics: Topics, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.csv", "b.csv", "notes.txt", "sub/c.csv"):
        (folder / name).write_text(name)
    worker = workers()
    topics.produce(topics.polling, local_job("j", folder))
    first = {e["value"]["path"]: e["value"]["event_id"] for e in topics.read(topics.events, 2)}
    assert sorted(first) == ["a.csv", "b.csv"]  # not notes.txt, not sub/ without **
    worker.wait_log("published 2 event(s)")

    (folder / "a.csv").write_text("a.csv, longer now")
    (folder / "d.csv").write_text("d")
    topics.produce(topics.polling, local_job("j", folder))
    worker.wait_log("published 2 event(s)", count=2)
    second = {e["value"]["path"]: e["value"]["event_id"] for e in topics.read(topics.events, 4)[2:]}
    assert sorted(second) == ["a.csv", "d.csv"] and second["a.csv"] != first["a.csv"]

    topics.produce(topics.polling, local_job("deep", folder, "**/*.csv"))
    worker.wait_log("published 4 event(s)")  # another pattern: a listing of its own
    deep = [e["value"]["path"] for e in topics.read(topics.events, 8)[4:]]
    assert sorted(deep) == ["a.csv", "b.csv", "d.csv", "sub/c.csv"]

    topics.produce(topics.polling, local_job("j", folder, emit="all"))
    worker.wait_log("published 3 event(s)")
    again = {e["value"]["path"]: e["value"]["event_id"] for e in topics.read(topics.events, 11)[8:]}
    assert again == {"a.csv": second["a.csv"], "b.csv": first["b.csv"], "d.csv": second["d.csv"]}


def test_bad_jobs_and_a_dead_source_go_to_the_dead_letters_and_block_nothing(
    workers: MakeWorker, topics: Topics, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.csv").write_text("x")
    secret = "hunter2-in-a-message"
    bad: list[bytes | str | dict[str, Any]] = [
        b"not json at all",
        {"source_config": {"source_type": "local", "path": str(folder)}},
        {"job_id": "g", "source_config": {"source_type": "gopher"}},
        b"",
        "[" * 100_000,
        b"\xff\xfe binary",
        {
            "job_id": "p",
            "source_config": {"source_type": "local", "path": "/x", "password": secret},
        },
        local_job("gone", tmp_path / "no-such-folder"),
        local_job("ok", folder),
    ]
    topics.produce(topics.polling, *bad, key="same-partition")
    worker = workers()
    [event] = topics.read(topics.events, 1)
    assert event["value"]["job_id"] == "ok"  # the bad ones before it did not block it
    letters = [m["value"] for m in topics.read(topics.dlq, 8)]
    reasons = [letter["reason"] for letter in letters]
    assert [letter["origin"]["offset"] for letter in letters] == list(range(8))
    assert {letter["origin"]["topic"] for letter in letters} == {topics.polling}
    assert {letter["origin"]["key"] for letter in letters} == {"same-partition"}
    assert reasons[0].startswith("message:1:1: invalid JSON")
    assert reasons[1] == "message:1:1: job_id: required field is missing"
    assert reasons[2] == (
        'message:1:17: source_config: expected "source_type": one of dummy, local, sftp, '
        "ftp, ftps, s3, http"
    )
    assert reasons[3] == "the message is empty; expected a JSON polling job"
    assert "nested more than 64 levels deep" in reasons[4]
    assert reasons[5] == "the message is not UTF-8 text; expected a JSON polling job"
    assert "source_config.password: unknown field" in reasons[6]
    assert reasons[7] == f"local://{tmp_path / 'no-such-folder'}: no such folder"
    assert letters[6]["message"]["source_config"]["password"] == "**********"
    assert secret not in json.dumps(letters) + worker.log()
    assert letters[0]["message"] == "not json at all" and letters[7]["message"]["job_id"] == "gone"
    worker.wait_log("published 1 event(s)")
    assert 'poller_jobs_total{status="invalid"} 7.0' in worker.metrics()
    assert 'poller_jobs_total{status="dead"} 1.0' in worker.metrics()


def test_health_metrics_and_a_sigterm_that_drains(workers: MakeWorker, topics: Topics) -> None:
    worker = workers()
    code, body = wait_until(
        lambda: (h := worker.health())[1]["assigned"] and h, what="partitions to be assigned"
    )
    assert code == 200 and body["status"] == "healthy"
    assert sorted(body["assigned"]) == [f"{topics.polling}/0", f"{topics.polling}/1"]
    topics.produce(topics.polling, json.loads((REPO / "examples/polling-job.json").read_text()))
    worker.wait_log("published 3 event(s)")
    metrics = worker.metrics()
    for line in (
        'poller_jobs_total{status="done"} 1.0',
        'poller_files_processed_total{source_type="dummy"} 3.0',
        'poller_files_published_total{source_type="dummy"} 3.0',
        "poller_active_jobs 0.0",
        f'poller_kafka_messages_consumed_total{{topic="{topics.polling}"}} 1.0',
        f'poller_kafka_messages_published_total{{topic="{topics.events}"}} 3.0',
        "poller_job_duration_seconds_count 1.0",
    ):
        assert line in metrics, line
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(15) == 0
    assert "worker stopped" in worker.log()
    # The offset was committed: a worker of the same group starting now has nothing to do.
    again = workers("w2")
    wait_until(lambda: again.health()[1]["assigned"], what="the second worker's assignment")
    assert "published" not in again.log()


def test_two_workers_of_a_group_split_the_partitions(workers: MakeWorker, topics: Topics) -> None:
    first, second = workers("w1"), workers("w2")

    def split() -> list[list[str]] | None:
        shares = [sorted(worker.health()[1]["assigned"]) for worker in (first, second)]
        return shares if all(len(share) == 1 for share in shares) else None

    shares = wait_until(split, timeout=30, what="one partition each")
    assert sorted(shares[0] + shares[1]) == [f"{topics.polling}/0", f"{topics.polling}/1"]


def test_kafka_check_reports_and_creates_the_topics(tmp_path: Path, topics: Topics) -> None:
    worker = WorkerProcess(tmp_path / "w", topics.kafka_settings(polling_topic="new-polling"))
    missing = kafka_app(worker.folder, "check")
    assert missing.returncode == 1
    assert (
        "new-polling: missing" in missing.stdout
        and f"{topics.events}: 1 partition(s)" in missing.stdout
    )
    made = kafka_app(worker.folder, "check", "--create-topics", "--partitions", "2")
    assert made.returncode == 0, made.stderr
    assert "created new-polling (2 partition(s))" in made.stdout
    assert kafka_app(worker.folder, "check").returncode == 0
    gone = WorkerProcess(tmp_path / "x", topics.kafka_settings(bootstrap_servers="127.0.0.1:1"))
    down = kafka_app(gone.folder, "check")
    assert down.returncode == 1 and "cannot be reached" in down.stderr
    assert "Traceback" not in down.stderr


def test_replay_dlq_puts_dead_letters_back_once(
    workers: MakeWorker, topics: Topics, tmp_path: Path
) -> None:
    folder = tmp_path / "later"
    topics.produce(topics.polling, local_job("late", folder))
    worker = workers()
    [letter] = topics.read(topics.dlq, 1)
    assert letter["value"]["reason"].endswith("no such folder")
    folder.mkdir()
    (folder / "now.csv").write_text("here")
    replayed = kafka_app(worker.folder, "replay-dlq", "--idle-seconds", "2")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith("replayed 1 dead letter(s)")
    [event] = topics.read(topics.events, 1)
    assert event["value"]["path"] == "now.csv"
    again = kafka_app(worker.folder, "replay-dlq", "--idle-seconds", "2")
    assert again.stdout.startswith("replayed 0 dead letter(s)")


# --- jobs that take a while: a slow directory index ------------------------------------


class SlowIndex:
    """An nginx-style JSON index of three files that answers after `delay_seconds`;
    `asked` is set when a request arrives (a worker has the job in hand)."""

    FILES = (("a.csv", 10), ("b.csv", 20), ("c.csv", 30))

    def __init__(self, delay_seconds: float) -> None:
        self.delay_seconds = delay_seconds
        self.asked = threading.Event()
        self.requests = 0
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests += 1
                index.asked.set()
                time.sleep(index.delay_seconds)
                body = json.dumps(
                    [
                        {
                            "name": name,
                            "type": "file",
                            "mtime": "Fri, 04 Dec 2026 10:00:00 GMT",
                            "size": size,
                        }
                        for name, size in index.FILES
                    ]
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/index/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def job(self, job_id: str, **fields: Any) -> dict[str, Any]:
        source = {"source_type": "http", "url": self.url, "timeout_seconds": 30}
        return {"job_id": job_id, "source_config": source, "file_pattern": "*.csv", **fields}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_index() -> Iterator[SlowIndex]:
    index = SlowIndex(delay_seconds=3.0)
    yield index
    index.close()


def event_ids(messages: list[dict[str, Any]]) -> dict[str, str]:
    return {m["key"]: m["value"]["event_id"] for m in messages}


def test_a_worker_killed_mid_job_leaves_it_to_the_other_with_the_same_event_ids(
    workers: MakeWorker, topics: Topics, slow_index: SlowIndex
) -> None:
    first, second = workers("w1"), workers("w2")
    wait_until(
        lambda: all(len(w.health()[1]["assigned"]) == 1 for w in (first, second)),
        timeout=30,
        what="one partition each",
    )
    topics.produce(topics.polling, slow_index.job("slow"))
    assert slow_index.asked.wait(20), "no worker asked the index"
    holder, other = (first, second) if "listing http" in first.log() else (second, first)
    assert "listing http" in holder.log()
    holder.signal(signal.SIGKILL)  # mid-listing: nothing published, nothing committed
    slow_index.delay_seconds = 0.0
    events = topics.read(topics.events, 3, timeout=30)
    other.wait_log("published 3 event(s)")
    assert sorted(e["value"]["name"] for e in events) == ["a.csv", "b.csv", "c.csv"]
    assert slow_index.requests == 2  # the killed worker's try, then the survivor's

    # The ids depend on the source, the path and the version only: a third worker, in
    # place of the second, gives the same ones for the same files.
    other.stop()
    third = workers("w3")
    topics.produce(topics.polling, slow_index.job("again", emit="all"))
    third.wait_log("published 3 event(s)")
    again = topics.read(topics.events, 6)[3:]
    assert event_ids(again) == event_ids(events)
    assert topics.count(topics.dlq, settle=0.5) == 0


def test_sigterm_finishes_the_job_in_hand_then_commits(
    workers: MakeWorker, topics: Topics, slow_index: SlowIndex
) -> None:
    worker = workers(
        config={
            **topics.kafka_settings()["config"],
            "max.poll.interval.ms": 2500,  # the job takes longer: polling goes on meanwhile
        }
    )
    topics.produce(topics.polling, slow_index.job("slow"))
    assert slow_index.asked.wait(20)
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(20) == 0
    log = worker.log()
    assert "published 3 event(s)" in log and "worker stopped" in log
    during = log.split("listing http")[1].split("published 3 event(s)")[0]
    assert "revoked" not in during and "commit of offset" not in log  # it kept its partitions
    assert len(topics.read(topics.events, 3)) == 3
    # Committed: the next worker of the group does not list the source again.
    slow_index.delay_seconds = 0.0
    successor = workers("w2")
    wait_until(lambda: successor.health()[1]["assigned"], what="the successor's assignment")
    assert slow_index.requests == 1 and "listing" not in successor.log()


def test_json_logs_carry_the_job_and_its_kafka_origin(tmp_path: Path, topics: Topics) -> None:
    worker = WorkerProcess(tmp_path / "w", topics.kafka_settings(), env={"LOG_FORMAT": "json"})
    worker.start()
    try:
        topics.produce(topics.polling, json.loads((REPO / "examples/polling-job.json").read_text()))
        worker.wait_log("published 3 event(s)")
    finally:
        worker.stop()
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    listed = [line for line in lines if "published 3 event(s)" in line["message"]]
    [line] = listed
    assert line["job_id"] == "dummy-csv" and line["topic"] == topics.polling
    assert isinstance(line["partition"], int) and line["offset"] == 0
    started = next(line for line in lines if "] listing dummy://" in line["message"])
    assert started["job_id"] == "dummy-csv" and started["offset"] == 0  # from the job's thread


def test_listings_of_sources_not_polled_for_listing_keep_days_are_forgotten(
    tmp_path: Path, topics: Topics
) -> None:
    worker = WorkerProcess(tmp_path / "w", topics.kafka_settings(listing_keep_days=30))
    store = SqliteStore(worker.folder / "data" / "worker.db")
    now = datetime.now(UTC)
    store.save_listing("local:///old|*.csv", {"a.csv": "1||"}, now - timedelta(days=31))
    store.save_listing("local:///recent|*.csv", {"b.csv": "1||"}, now - timedelta(days=29))
    store.close()
    worker.start()
    try:
        worker.wait_log("forgot the listings of 1 source(s) not polled for 30 days")
    finally:
        worker.stop()
    reader = SqliteStore(worker.folder / "data" / "worker.db")
    assert reader.listing("local:///old|*.csv") == {}
    assert reader.listing("local:///recent|*.csv") == {"b.csv": "1||"}
    reader.close()


def test_a_source_still_down_after_its_retries_is_a_dead_letter(
    workers: MakeWorker, topics: Topics
) -> None:
    url = f"http://127.0.0.1:{unused_port()}/"
    down = {"source_type": "http", "url": url, "timeout_seconds": 1}
    topics.produce(topics.polling, {"job_id": "down", "source_config": down})
    worker = workers(source_retries=2, source_backoff_seconds=0.2)
    [letter] = topics.read(topics.dlq, 1)
    assert letter["value"]["reason"] == f"{url}: cannot connect"
    log = worker.wait_log("dead letter:")
    assert log.count("listing failed") == 2  # attempts 2 and 3, after 0.2 s and 0.4 s
    assert "attempt 2 again in 0.2s" in log and "attempt 3 again in 0.4s" in log
    assert 'poller_connection_errors_total{source_type="http"} 3.0' in worker.metrics()


def test_health_says_when_no_broker_answers_and_when_one_does_again(
    tmp_path: Path, topics: Topics
) -> None:
    port = free_port()
    kafka = topics.kafka_settings(bootstrap_servers=f"127.0.0.1:{port}", polling_topic="p")
    worker = WorkerProcess(tmp_path / "w", kafka)
    worker.start()
    broker = None
    try:
        _, body = wait_until(
            lambda: (h := worker.health())[0] == 503 and h, timeout=15, what="a 503"
        )
        assert body["status"] == "unhealthy" and body["reason"].startswith("no broker answers")
        broker, address = start_broker(tmp_path / "tansu.log", port)
        create_topics(address, {"p": 1})
        wait_until(lambda: worker.health()[0] == 200, timeout=30, what="healthy again")
    finally:
        worker.stop()
        if broker is not None:
            stop_broker(broker)


def test_jobs_that_come_during_a_slow_one_wait_their_turn_each_once_in_order(
    workers: MakeWorker, topics: Topics, slow_index: SlowIndex
) -> None:
    shipped = json.loads((REPO / "examples/polling-job.json").read_text())
    worker = workers()
    wait_until(lambda: worker.health()[1]["assigned"], what="the worker's partitions")
    slow_index.delay_seconds = 2.0
    topics.produce(topics.polling, slow_index.job("slow"), key="one")
    assert slow_index.asked.wait(10)
    quick = [{**shipped, "job_id": f"quick-{i}", "emit": "all"} for i in range(6)]
    topics.produce(topics.polling, *quick[:3], key="one")  # behind the slow one
    topics.produce(topics.polling, *quick[3:], key="other")
    log = worker.wait_log("published 3 event(s)", count=7, timeout=30)
    done = re.findall(r"\[job=(\S+) run=-\] \[\S+/(\d)@(\d+)\] listed", log)
    assert sorted(job for job, _, _ in done) == sorted(["slow", *(q["job_id"] for q in quick)])
    for partition in {p for _, p, _ in done}:
        offsets = [int(o) for _, p, o in done if p == partition]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert len(topics.read(topics.events, 21)) == 21


def test_only_the_source_config_is_filled_in_so_no_secret_rides_in_the_events(
    tmp_path: Path, topics: Topics
) -> None:
    secret = "worker-secret-4c2d"
    worker = WorkerProcess(
        tmp_path / "w", topics.kafka_settings(), env={"WORKER_SECRET": secret, "DATA": "dummy"}
    )
    worker.start()
    try:
        job = {
            "job_id": "meta",
            "source_config": {"source_type": "${DATA}"},  # filled in: the worker's own
            "file_pattern": "sample_data_1.csv",
            "metadata": {"note": "${WORKER_SECRET}"},  # left as written
        }
        topics.produce(topics.polling, job)
        [event] = topics.read(topics.events, 1)
    finally:
        worker.stop()
    assert event["value"]["source_type"] == "dummy"
    assert event["value"]["metadata"] == {"note": "${WORKER_SECRET}"}
    assert secret not in json.dumps(event) + worker.log()
