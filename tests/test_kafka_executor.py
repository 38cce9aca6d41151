"""Runs spread over Kafka workers (SPEC §11): a real daemon publishing run requests, real
`app.py worker` processes running them, Tansu and the stand-in platform (tests/kafkaexec.py
says why a call that reaches the platform was made by a worker)."""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.daemonproc import wait_until
from tests.kafkaexec import PASSWORD, Deployment
from tests.platform import slow


def ended(status: str) -> Callable[[dict[str, Any] | None], bool]:
    """A wait_job check: the job's last run has this status."""
    return lambda job: bool(job and job["last_run"] and job["last_run"]["status"] == status)


def samples(text: str) -> dict[str, float]:
    """/metrics as {series: value}."""
    lines = [line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")]
    return {series: float(value) for series, value in lines}


def sync(job_id: str, every: str = "1s", **fields: object) -> dict[str, object]:
    return {"id": job_id, "every": every, "integrationIDs": [[f"sync-{job_id}"]], **fields}


def test_two_workers_run_every_fire_once_and_the_daemon_calls_nothing(
    deployment: Deployment,
) -> None:
    one, other = deployment.worker("w1"), deployment.worker("w2")
    wait_until(lambda: all("assigned" in w.log() for w in (one, other)), what="both in the group")
    api = deployment.daemon([sync("a"), sync("b")])
    daemon = api.daemon
    wait_until(lambda: len(daemon.runs(status="success")) >= 14, timeout=40, what="14 runs")
    status = api.get("/status").json()
    assert status["executor"] == "kafka"
    assert {w["name"].split("@")[0] for w in status["workers"]} == {"w1", "w2"}
    assert sum(w["results"] for w in status["workers"]) >= 14
    metrics = samples(api.get("/metrics").text)
    assert metrics['poller_run_requests_total{outcome="acknowledged"}'] >= 14
    assert metrics['poller_run_results_total{outcome="recorded"}'] >= 14
    assert metrics["poller_run_dead_letters_total"] == 0
    daemon.stop()
    runs = daemon.runs()
    assert {r["status"] for r in runs} == {"success"}, [r["reason"] for r in runs]
    for job_id in ("a", "b"):
        fires = Counter(r["scheduled_for"] for r in runs if r["job_id"] == job_id)
        assert fires and max(fires.values()) == 1, fires  # every fire once
    calls = [r for r in deployment.platform.requests if r.integration_id]
    request_ids = Counter(call.headers["X-Request-ID"] for call in calls)
    assert len(calls) == len(runs) and max(request_ids.values()) == 1  # one call per run
    ran = {w.folder.name: w.log().count("run finished: success") for w in (one, other)}
    assert sum(ran.values()) == len(runs) and all(ran.values()), ran  # both ran some
    # The requests carry the job as written: `${…}` unresolved, no secret on either topic.
    requests = deployment.messages(deployment.runs_topic)
    results = deployment.messages(deployment.results_topic)
    assert len(requests) == len(runs) and len(results) == len(runs)
    assert all(b"${PLATFORM_PW}" in request for request in requests)
    secrets = {PASSWORD, *deployment.platform.issued()}
    leaked = [s for s in secrets for m in requests + results if s.encode() in m]
    assert not leaked


def test_a_worker_killed_mid_run_leaves_the_run_to_the_other_with_the_same_ids(
    deployment: Deployment,
) -> None:
    api = deployment.daemon([sync("slow", every="1h")])
    workers = [deployment.worker("w1"), deployment.worker("w2")]
    wait_until(lambda: all("assigned" in w.log() for w in workers), what="both in the group")
    deployment.platform.script("sync-slow", slow(30))
    run_id = api.post("/jobs/slow/trigger").json()["run_id"]
    assert deployment.platform.wait_for_requests(2, timeout=20)  # the login and the call
    [holder] = [w for w in workers if "run request taken" in w.log()]
    holder.signal(signal.SIGKILL)  # mid-call: no result published, nothing committed
    [survivor] = [w for w in workers if w is not holder]
    record = api.wait_job("slow", "its run to succeed", ended("success"), timeout=30)
    assert record["last_run"]["run_id"] == run_id
    assert "delivered again (delivery 2)" in survivor.log()
    calls = deployment.platform.calls("sync-slow")
    assert len(calls) == 2 and calls[0].headers["X-Request-ID"] == calls[1].headers["X-Request-ID"]
    assert [r["run_id"] for r in api.daemon.runs("slow")] == [run_id]  # recorded once


def test_a_request_that_kills_every_worker_goes_to_the_dead_letter_topic(
    deployment: Deployment,
) -> None:
    poison = {"id": "poison", "every": "1h", "integrationIDs": [[{"function": "steps:die"}]]}
    api = deployment.daemon([poison])
    worker = deployment.worker("w1")
    wait_until(lambda: "assigned" in worker.log(), what="the worker in the group")
    run_id = api.post("/jobs/poison/trigger").json()["run_id"]
    for _ in range(4):  # the first delivery and 3 redeliveries: each kills the worker
        assert worker.proc is not None
        worker.proc.wait(timeout=30)
        worker.start()
    api.wait_job("poison", "its run failed", ended("failed"), timeout=30)
    [failed] = api.daemon.runs("poison")
    assert failed["run_id"] == run_id and "delivered 5 times" in failed["reason"]
    [letter] = deployment.topics.read(deployment.dlq_topic, 1)
    assert letter["value"]["message"]["run_id"] == run_id
    assert letter["value"]["origin"]["topic"] == deployment.runs_topic
    assert worker.proc is not None and worker.proc.poll() is None  # it lives on


def test_a_chain_longer_than_max_poll_interval_is_not_redelivered(
    deployment: Deployment,
) -> None:
    nap = {
        "id": "nap",
        "every": "1h",
        "input": {"seconds": 5},
        "integrationIDs": [[{"function": "steps:nap"}]],
    }
    api = deployment.daemon([nap])
    worker = deployment.worker(
        "w1",
        config={
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 250,
            "max.poll.interval.ms": 2500,
        },
    )
    wait_until(lambda: "assigned" in worker.log(), what="the worker in the group")
    api.post("/jobs/nap/trigger")
    api.wait_job("nap", "its run", ended("success"), timeout=20)
    time.sleep(1)  # a redelivery would be taken at once
    assert worker.log().count("run request taken") == 1
    assert "delivered again" not in worker.log()


def test_a_request_picked_up_after_the_grace_is_a_misfire_and_no_result_in_time_interrupts(
    deployment: Deployment,
) -> None:
    api = deployment.daemon(
        [sync("late", misfire_grace_seconds=1, max_instances=10)],
        executor=deployment.executor(result_timeout_seconds=6),
    )
    api.daemon.wait_runs("late", 3, status="running", timeout=10)  # no worker yet: they wait
    worker = deployment.worker("w1")
    skipped = api.daemon.wait_runs("late", 2, status="skipped", timeout=30)
    assert all("misfire, picked up by a worker" in r["reason"] for r in skipped)
    api.daemon.wait_runs("late", 1, status="success", timeout=30)  # fresh ones run
    worker.stop()
    interrupted = api.daemon.wait_runs("late", 1, status="interrupted", timeout=20)
    assert "no worker's result within" in interrupted[0]["reason"]


def test_lying_results_are_dropped_and_the_run_waits_for_a_worker(
    deployment: Deployment,
) -> None:
    api = deployment.daemon([sync("a", every="1h")])
    run_id = api.post("/jobs/a/trigger").json()["run_id"]
    [request] = deployment.topics.read(deployment.runs_topic, 1)
    assert request["key"] == run_id
    forged_run = {
        "run_id": "another-run",
        "job_id": "a",
        "trigger": "manual",
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:01Z",
        "status": "success",
    }
    deployment.topics.produce(
        deployment.results_topic,
        b"\xff\xfe not text",
        "not json",
        '{"run": ' * 50_000 + "1" + "}" * 50_000,  # nested past any parser's stack
        {"run": {**forged_run, "run_id": run_id, "status": "done"}},
        {"run": forged_run, "worker": "liar"},  # well formed, but of another run
        key=run_id,
    )
    wait_until(
        lambda: (
            api.daemon.log().count("invalid run result") >= 4
            and "is of run another-run" in api.daemon.log()
        ),
        what="the lies logged",
    )
    [waiting] = api.daemon.runs("a")
    assert waiting["status"] == "running", waiting  # nothing recorded over it: it waits
    worker = deployment.worker("w1")
    record = api.wait_job("a", "its run to succeed", ended("success"), timeout=30)
    assert record["last_run"]["run_id"] == run_id
    assert [w["name"].split("@")[0] for w in api.get("/status").json()["workers"]] == ["w1"]
    metrics = samples(api.get("/metrics").text)
    assert metrics['poller_run_results_total{outcome="invalid"}'] == 5
    assert worker.proc is not None and worker.proc.poll() is None


def test_a_broken_run_request_is_a_dead_letter_and_a_run_it_names_fails(
    deployment: Deployment,
) -> None:
    worker = deployment.worker("w1")
    wait_until(lambda: "assigned" in worker.log(), what="the worker in the group")
    deployment.topics.produce(
        deployment.runs_topic,
        b"\x00 garbage",
        {"run_id": "forged-run", "job_id": "a", "event": "not an event"},
        '{"run_id": ' * 50_000,
        key="forged-run",
    )
    letters = deployment.topics.read(deployment.dlq_topic, 3)
    assert all(letter["value"]["origin"]["topic"] == deployment.runs_topic for letter in letters)
    assert any("nested too deeply" in letter["value"]["reason"] for letter in letters), letters
    [result] = deployment.topics.read(deployment.results_topic, 1)
    run = result["value"]["run"]
    assert result["key"] == run["run_id"] == "forged-run"
    assert run["status"] == "failed" and "invalid run request" in run["reason"]
    assert result["value"]["dead_letter"] is True
    assert worker.proc is not None and worker.proc.poll() is None  # it lives on


def test_one_worker_with_concurrency_runs_requests_at_once(deployment: Deployment) -> None:
    naps = [
        {
            "id": f"nap{i}",
            "every": "1h",
            "input": {"seconds": 1},
            "integrationIDs": [[{"function": "steps:nap"}]],
        }
        for i in range(8)
    ]
    api = deployment.daemon(naps)
    worker = deployment.worker("w1", "--runs", "--concurrency", "4")
    every = {f"{deployment.runs_topic}/{p}" for p in range(4)}
    wait_until(
        lambda: set(worker.health()[1]["assigned"]) == every,
        timeout=40,
        what="the runs topic's 4 partitions over the worker's 4 consumers",
    )
    for nap in naps:
        assert api.post(f"/jobs/{nap['id']}/trigger").status_code == 202
    wait_until(lambda: len(api.daemon.runs(status="success")) == 8, timeout=40, what="8 runs")
    spans = sorted((r["started_at"], r["finished_at"]) for r in api.daemon.runs())
    overlapping = sum(1 for (_, end), (start, _) in itertools.pairwise(spans) if start < end)
    assert overlapping >= 1, spans  # one consumer per partition: not one after another
    [seen] = api.get("/status").json()["workers"]  # one process, one worker
    assert seen["results"] == 8
    assert worker.stop() == 0  # SIGTERM: every consumer drains and leaves
    assert worker.log().count("worker stopped") == 4


def test_a_daemon_killed_mid_run_leaves_it_interrupted_and_ignores_its_late_result(
    deployment: Deployment,
) -> None:
    nap = {
        "id": "nap",
        "every": "1h",
        "input": {"seconds": 3},
        "integrationIDs": [[{"function": "steps:nap"}]],
    }
    api = deployment.daemon([nap])
    worker = deployment.worker("w1")
    wait_until(lambda: "assigned" in worker.log(), what="the worker in the group")
    run_id = api.post("/jobs/nap/trigger").json()["run_id"]
    worker.wait_log("run request taken")
    api.daemon.signal(signal.SIGKILL)
    api.daemon.start()  # its claims are gone with it: the run is the store's to end
    [record] = api.daemon.runs("nap")
    assert record["run_id"] == run_id and record["status"] == "interrupted", record
    worker.wait_log("run finished: success")
    wait_until(
        lambda: len(deployment.topics.read(deployment.results_topic, 1)) == 1,
        what="the worker's result published",
    )
    time.sleep(1)  # the restarted daemon reads the results topic from its start
    [record] = api.daemon.runs("nap")
    assert record["status"] == "interrupted"  # the late result is not recorded over it
    assert api.daemon.proc is not None and api.daemon.proc.poll() is None
