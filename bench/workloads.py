"""A child of bench_scheduler.py: one scheduler on one workload, in this process alone.

Usage: workloads.py SCHEDULER WORKLOAD PARAMS_JSON; prints one JSON result as its last line,
so CPU seconds and RSS belong to that scheduler alone.
"""

from __future__ import annotations

import json
import os
import sys
from typing import NoReturn

import library_runs
import poller_runs
from measure import ROOT, Params, Result, profiled


def run(scheduler: str, workload: str, params: Params) -> Result:
    """Run one pair; the `schedule` runs end the process themselves once measured."""
    if scheduler == "poller":
        runs = {"a": poller_runs.poller_a, "b": poller_runs.poller_b, "c": poller_runs.poller_c}
        return runs[workload](params)
    if scheduler == "apscheduler-recorded":
        return library_runs.apscheduler_recorded_a(params)
    if scheduler == "apscheduler":
        aps = {
            "a": library_runs.apscheduler_a,
            "b": library_runs.apscheduler_b,
            "c": library_runs.apscheduler_c,
        }
        return aps[workload](params)
    loops = {
        "a": library_runs.schedule_a,
        "b": library_runs.schedule_b,
        "c": library_runs.schedule_c,
    }
    loops[workload](params, scheduler == "schedule-idle")


def profiled_run(scheduler: str, workload: str, params: Params) -> Result:
    """Run under cProfile in every thread; write the merged stats to params["profile"]."""
    result, _ = profiled(lambda: run(scheduler, workload, params), params["profile"])
    return result


def main(argv: list[str]) -> NoReturn:
    scheduler, workload, params = argv[0], argv[1], json.loads(argv[2])
    sys.path.insert(0, str(ROOT))
    result = (profiled_run if params.get("profile") else run)(scheduler, workload, params)
    print(json.dumps(result), flush=True)
    os._exit(0)  # a scheduler's threads may still be running; the result is out


if __name__ == "__main__":
    main(sys.argv[1:])
