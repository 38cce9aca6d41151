"""A crash soak of the Kafka executor: `kill -9` its workers at random moments.

    .venv/bin/python bench/soak_executor.py [SECONDS [CONCURRENCY]]   # 60 s, 1 consumer

A real `python app.py` daemon with settings.executor kafka, three real `app.py worker
--runs --concurrency CONCURRENCY` processes, a Tansu broker and the stand-in platform
(bench_executor.py's set-up).
Four jobs fire every 1 s, each one call the platform answers after 0.3 s, so a kill often
lands mid-run. Every 2 to 5 s one worker, at random, is killed with SIGKILL and started
again 0 to 1 s later. Then the killing stops and the soak waits for every run to end.
It prints the records by status (the reasons of all but successes), the runs left
`running`, how many runs reached the platform twice (redelivered after a kill: the same
X-Request-ID), and any traceback the processes wrote. It asserts nothing (the tests do, in
tests/test_kafka_executor.py).
"""

from __future__ import annotations

import json
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_executor import bench_on, stop  # noqa: E402

from tests.platform import PlatformServer  # noqa: E402


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    jobs = [{"id": f"j{i}", "every": "1s", "integrationIDs": [["sync-soak"]]} for i in range(4)]
    with bench_on("sync-soak", 0.3) as bench:
        daemon, workers, _ = bench.deploy(jobs, 3, concurrency)
        kills = 0
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(random.uniform(2, 5))
                victim = random.choice(workers)
                assert victim.proc is not None
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait()
                kills += 1
                time.sleep(random.uniform(0, 1))
                victim.start()
            config = json.loads(daemon.config_path.read_text())
            daemon.replace_config({**config, "jobs": []})  # no new fires: drain
            deadline = time.monotonic() + 120
            while any(r["status"] == "running" for r in daemon.runs()):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            stop(daemon, workers)
        folders = [daemon.folder, *(w.folder for w in workers)]
        report(daemon.runs(), bench.platform, kills, folders)
    return 0


def report(
    runs: list[dict[str, Any]], platform: PlatformServer, kills: int, folders: list[Path]
) -> None:
    statuses = Counter(str(r["status"]) for r in runs)
    print(f"{kills} kills; {len(runs)} run records: {dict(statuses)}")
    reasons = Counter(str(r["reason"]).split(":")[0] for r in runs if r["status"] != "success")
    for reason, count in reasons.most_common():
        print(f"  {count:>4} {reason}")
    calls = Counter(
        r.headers.get("X-Request-ID", "") for r in platform.requests if r.integration_id
    )
    twice = sum(n > 1 for n in calls.values())
    print(f"calls: {sum(calls.values())}, runs called twice or more: {twice}")
    left = [r["run_id"] for r in runs if r["status"] == "running"]
    print(f"left running: {len(left)} {left[:5]}")
    for folder in folders:
        path = folder / "stderr.txt"
        if path.exists() and "Traceback" in path.read_text():
            print(f"traceback in {path}")


if __name__ == "__main__":
    sys.exit(main())
