"""A crash soak of two daemons on one PostgreSQL: `kill -9` one of them at random moments.

    .venv/bin/python bench/soak_store.py [SECONDS]      # default 60

Two real `python app.py` daemons share a throwaway cluster (tests/pgcluster.py), with three
jobs every 1 s and one slow job (2 s, every 1 s, max_instances 1), and a lease of 3 s.
Every 1.5 to 5 s one of them, at random, is killed with SIGKILL and started again 0 to
1.5 s later, so one daemon is always alive. At the end it prints, per 1 s job, the slots
of the soak that have no record, or two; then the records left `running` past the lease,
and any traceback the daemons wrote. It asserts nothing (the tests do, in
tests/test_shared_store.py).
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from tests.pgcluster import PASSWORD, start_cluster  # noqa: E402

STEPS = (
    "import time\n\n"
    "def tick(data, context):\n    return {}\n\n"
    "def nap(data, context):\n    time.sleep(data['seconds'])\n    return {}\n"
)
TICKS = ("a", "b", "c")


def start(folder: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--config", "config.json"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "stderr.txt").open("ab"),
    )


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    cluster = start_cluster()
    url = cluster.url(cluster.new_database(), PASSWORD)
    root = Path(tempfile.mkdtemp(prefix="soak-store-"))
    jobs = [
        {"id": job, "every": "1s", "integrationIDs": [[{"function": "steps:tick"}]]}
        for job in TICKS
    ]
    jobs.append(
        {
            "id": "slow",
            "every": "1s",
            "input": {"seconds": 2},
            "integrationIDs": [[{"function": "steps:nap"}]],
        }
    )
    settings = {"timezone": "UTC", "state_db": url, "daemon_lease_seconds": 3}
    folders = [root / "one", root / "other"]
    for folder in folders:
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"settings": settings, "jobs": jobs}))
        (folder / "steps.py").write_text(STEPS)
    try:
        procs = [start(folder) for folder in folders]
        time.sleep(3)
        began = datetime.now().astimezone()
        kills = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(random.uniform(1.5, 5))
            victim = random.randrange(2)
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            kills += 1
            time.sleep(random.uniform(0, 1.5))
            procs[victim] = start(folders[victim])
        ended = datetime.now().astimezone()
        time.sleep(6)  # past the lease and a sweep: the killed daemons' runs are marked
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
        with psycopg.connect(url) as conn:
            records = [
                json.loads(text) for (text,) in conn.execute("SELECT record FROM poller_runs")
            ]
    finally:
        cluster.stop()
    print(
        f"{seconds:.0f} s, {kills} kill -9, {len(records)} records:",
        dict(Counter(r["status"] for r in records)),
    )
    for job in TICKS:
        slots = sorted(
            datetime.fromisoformat(r["scheduled_for"])
            for r in records
            if r["job_id"] == job and r["scheduled_for"]
        )
        soaked = [slot for slot in slots if began <= slot <= ended]
        doubled = [slot.isoformat() for slot, n in Counter(slots).items() if n > 1]
        missing = sum(
            round((b - a).total_seconds()) - 1
            for a, b in itertools.pairwise(soaked)
            if b - a != timedelta(seconds=1)
        )
        print(f"job {job}: {len(soaked)} slots, {missing} without a record, doubled: {doubled}")
    print("left running:", [r["run_id"] for r in records if r["status"] == "running"])
    for folder in folders:
        if "Traceback" in (folder / "stderr.txt").read_text():
            print(f"a traceback in {folder / 'stderr.txt'}")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
