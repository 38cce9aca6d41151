"""Alert delivery (SPEC §9) end to end: what a mail and a webhook say and keep secret, that a
refusing, slow or lying channel never touches a run, the rate limit's summary, pings, and
misfire and daemon alerts from a real daemon.

Every far end is a real server on 127.0.0.1 (tests/receivers.py). In-process tests drive a
Monitor around real chains as the daemon's executor does; the others run `python app.py`.
"""

from __future__ import annotations

import itertools
import json
import logging
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from poller.alerts.messages import Alert
from poller.alerts.sender import AlertSender, Delivery
from poller.clock import SystemClock
from poller.config.alerts import WebhookChannel
from poller.config.load import parse_config
from poller.config.models import Config
from poller.monitor import Monitor
from poller.redaction import MASK, Redactor
from poller.run import chain
from poller.run.client import ClientPool
from poller.run.results import RunResult
from poller.store import SqliteStore
from tests.daemonproc import DaemonProcess, config_with, launch, tick_job, wait_until
from tests.receivers import MailReceiver, Recorder, self_signed_cert, unused_port

STEPS = """
import os, threading

_lock = threading.Lock()
_runs = {"n": 0}

def ok(data, context):
    return {"ok": True}

def boom(data, context):
    # A step whose error text carries secrets it had at hand: the alert must not.
    raise RuntimeError(
        "upstream refused token " + os.environ.get("DELIVERY_TOKEN", "-")
        + " at " + os.environ.get("DELIVERY_PING", "-")
    )

def fail_first(data, context):
    with _lock:
        _runs["n"] += 1
        n = _runs["n"]
    if n <= int(data["failures"]):
        raise RuntimeError(f"failure {n} of {data['failures']}")
    return {"run": n}
"""
TOKEN = "tok-9f8e7d6c5b4a"
PING_SECRET = "PING-UUID-5e1f"
HOOK_SECRET = "HOOK-PATH-77aa"
SMTP_PASSWORD = "smtp-pa55-w0rd"
FAST = 0.5
"""Seconds: a run that no channel may slow down ends well within this."""


@pytest.fixture(scope="module")
def steps_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every in-process config: functions are imported once, by name."""
    folder = tmp_path_factory.mktemp("delivery")
    (folder / "delivery_steps.py").write_text(STEPS)
    return folder


@pytest.fixture
def hook() -> Iterator[Recorder]:
    with Recorder() as recorder:
        yield recorder


@pytest.fixture
def pings() -> Iterator[Recorder]:
    with Recorder() as recorder:
        yield recorder


class Harness:
    """A Monitor around real chains, driven as the daemon's executor drives it."""

    def __init__(self, config: Config, db: Path) -> None:
        self.config = config
        self.store = SqliteStore(db)
        self.clock = SystemClock()
        redactor = Redactor(config.secret_values())
        self.saved: dict[str, RunResult] = {}
        self.monitor = Monitor(config, self.store, redactor, self.clock, save=self._save)
        self.clients = ClientPool(config.environments, self.clock, redactor=redactor)

    def run(self, job_id: str) -> RunResult:
        job = self.config.job_map[job_id]
        self.monitor.started(job)
        result = chain.run_job(
            job, self.config, self.clients, clock=self.clock, changes=self.monitor.changes
        )
        result, sends = self.monitor.after_run(job, result)
        self._save(result)
        self.monitor.dispatch(result, sends)
        return result

    def record(self, run_id: str) -> dict[str, Any]:
        """The run's newest record (its alert entries as the deliveries ended)."""
        return self.saved[run_id].to_dict()

    def close(self) -> None:
        self.monitor.close(timeout=0.5)
        self.clients.close()
        self.store.close()

    def _save(self, record: RunResult) -> None:
        self.saved[record.run_id] = record


def harness(
    folder: Path, db: Path, channels: dict[str, Any], jobs: list[dict[str, Any]], **settings: Any
) -> Harness:
    raw = {"settings": {"alerts": channels, "alert_window_seconds": 0, **settings}, "jobs": jobs}
    return Harness(parse_config(json.dumps(raw), folder / "config.json"), db)


def job(job_id: str, function: str, *channels: str, **fields: Any) -> dict[str, Any]:
    alerts = {"alerts": {"on": ["failure"], "channels": list(channels)}} if channels else {}
    return {
        "id": job_id,
        "every": "1h",
        "integrationIDs": [[{"function": f"delivery_steps:{function}"}]],
        **alerts,
        **fields,
    }


def smtp_channel(mail: MailReceiver, **fields: Any) -> dict[str, Any]:
    return {
        "type": "smtp",
        "host": mail.host,
        "port": mail.port,
        "from": "poller@example.com",
        "to": ["ops@example.com", "oncall@example.com"],
        "timeout_seconds": 5,
        **fields,
    }


def wait_entries(h: Harness, run_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The run's alert entries once none is pending."""
    alerts: list[dict[str, Any]] = wait_until(
        lambda: (
            (a := h.record(run_id)["alerts"]) and all(e["status"] != "pending" for e in a) and a
        ),
        timeout,
        what=f"the alert deliveries of run {run_id}",
    )
    return alerts


def assert_secret_free(secret: str, *texts: str | bytes) -> None:
    for text in texts:
        shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        assert secret not in shown, f"{secret!r} leaked into {shown[:400]!r}"


# --- what an alert says ---------------------------------------------------------------


def test_a_failure_mail_names_job_kind_run_and_reason_in_plain_text_and_keeps_every_secret(
    steps_folder: Path,
    tmp_path: Path,
    hook: Recorder,
    pings: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ping_url = f"{pings.url}/ping/{PING_SECRET}"
    monkeypatch.setenv("DELIVERY_TOKEN", TOKEN)
    monkeypatch.setenv("DELIVERY_PING", ping_url)
    with MailReceiver() as mail:
        channels = {
            "mail": smtp_channel(mail, starttls=False),
            "hook": {
                "type": "webhook",
                "url": f"{hook.url}/hook/{HOOK_SECRET}",
                "headers": {"X-Hook-Token": "${DELIVERY_TOKEN}"},
            },
        }
        jobs = [job("nightly-sync", "boom", "mail", "hook", ping_url=ping_url)]
        h = harness(
            steps_folder,
            tmp_path / "poller.db",
            channels,
            jobs,
            public_url="https://poller.example.com",
        )
        try:
            result = h.run("nightly-sync")
            entries = wait_entries(h, result.run_id)
            [sent] = mail.wait_for(1)
            [posted] = hook.wait_received(1)
            pinged = pings.wait_received(2)
        finally:
            h.close()
    record = h.record(result.run_id)
    assert record["status"] == "failed"
    reason = record["reason"]
    assert "upstream refused token" in reason and MASK in reason  # masked where it was made
    assert [(e["channel"], e["status"], e["attempts"]) for e in entries] == [
        ("mail", "sent", 1),
        ("hook", "sent", 1),
    ]
    assert record["alerts_sent"] == 2 and record["alert_errors"] == []

    # The mail: to the configured envelope, one plain-text part naming what happened.
    assert (sent.mail_from, sent.rcpt_tos) == (
        "poller@example.com",
        ("ops@example.com", "oncall@example.com"),
    )
    message = sent.message
    assert message["Subject"] == "Poller: job nightly-sync failed"
    assert message["X-Poller-Alert"] == "failure"
    assert not message.is_multipart() and message.get_content_type() == "text/plain"
    body = message.get_content().replace("\r\n", "\n").removesuffix("\n")
    assert f"Reason: {reason}" in body
    assert f"Run {result.run_id} (manual), failed" in body
    assert f"Run: https://poller.example.com/ui#run={result.run_id}" in body

    # The webhook: Slack's text plus the same facts as fields.
    payload = posted.json
    assert payload["text"] == body
    assert (payload["kind"], payload["job_id"], payload["run_id"], payload["reason"]) == (
        "failure",
        "nightly-sync",
        result.run_id,
        reason,
    )

    # Secrets: the token only in the header the operator gave the webhook,
    # the webhook's and the ping's URLs only as where their own requests went.
    assert posted.path == f"/hook/{HOOK_SECRET}"
    assert posted.headers["X-Hook-Token"] == TOKEN
    others = {k: v for k, v in posted.headers.items() if k != "X-Hook-Token"}
    assert [p.path for p in pinged] == [f"/ping/{PING_SECRET}/start", f"/ping/{PING_SECRET}/fail"]
    for secret in (TOKEN, PING_SECRET, HOOK_SECRET):
        assert_secret_free(secret, sent.raw, posted.body, json.dumps(others), record["reason"])
        assert_secret_free(secret, *(p.text() for p in pinged))


def test_starttls_is_verified_and_logs_in_over_tls_only_with_a_trusted_certificate(
    steps_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The channel has no CA-file option: it trusts what the process trusts, so the test
    trusts its self-signed certificate through OpenSSL's SSL_CERT_FILE."""
    cert, key = self_signed_cert(tmp_path)
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    credentials = ("poller", SMTP_PASSWORD)
    with MailReceiver(tls=(cert, key), credentials=credentials) as mail:
        channel = smtp_channel(mail, username="poller", password="${SMTP_PASSWORD}")
        h = harness(
            steps_folder,
            tmp_path / "poller.db",
            {"mail": channel},
            [job("tls-job", "boom", "mail")],
        )
        try:
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            trusted = h.run("tls-job")
            [entry] = wait_entries(h, trusted.run_id)
            [sent] = mail.wait_for(1)
            assert entry["status"] == "sent" and sent.over_tls
            assert mail.logins == [credentials]
            assert_secret_free(SMTP_PASSWORD, sent.raw)

            monkeypatch.delenv("SSL_CERT_FILE")  # the system's CAs do not know this one
            with caplog.at_level(logging.WARNING, logger="poller.alerts.sender"):
                h.run("tls-job")
                wait_until(
                    lambda: (
                        "attempt 1 failed: TLS failed (CERTIFICATE_VERIFY_FAILED)" in caplog.text
                    ),
                    what="a refused certificate",
                )
            assert len(mail.mails) == 1 and mail.logins == [credentials]  # nothing sent
        finally:
            h.close()


# --- channels that fail or lie --------------------------------------------------------


def test_hostile_webhooks_are_bounded_and_never_touch_the_run(
    steps_folder: Path, tmp_path: Path
) -> None:
    """A 500 is retried twice (1 s, then 4 s later) and recorded; a 200 with an endless
    body, or with a body that never comes, counts as sent at once: the sender reads no
    answer's body, so neither can hold it."""
    with (
        Recorder(status=500) as broken,
        Recorder(answer="endless") as endless,
        Recorder(answer="stalled") as stalled,
    ):
        channels = {
            name: {"type": "webhook", "url": f"{recorder.url}/{name}", "timeout_seconds": 3}
            for name, recorder in (("endless", endless), ("stalled", stalled), ("e500", broken))
        }
        h = harness(
            steps_folder,
            tmp_path / "poller.db",
            channels,
            [job("victim", "boom", "endless", "stalled", "e500")],
        )
        try:
            started = time.monotonic()
            result = h.run("victim")
            assert time.monotonic() - started < FAST
            assert result.status == "failed" and (result.duration_ms or 0) < FAST * 1000
            assert endless.hung_up.wait(2), "the sender went on reading an endless body"
            # Both lying webhooks count as sent before the 3 s read timeout could end them.
            sent = wait_until(
                lambda: (
                    (s := [e for e in h.record(result.run_id)["alerts"] if e["status"] == "sent"])
                    and len(s) == 2
                    and s
                ),
                2,
                what="the lying webhooks to count as sent",
            )
            entries = wait_entries(h, result.run_id, timeout=10)
        finally:
            h.close()
    assert endless.body_bytes_sent < 64 * 2**20  # what the socket buffers took, no more
    assert {e["channel"]: e["attempts"] for e in sent} == {"endless": 1, "stalled": 1}
    by_channel = {e["channel"]: e for e in entries}
    assert by_channel["e500"] == {
        "kind": "failure",
        "channel": "e500",
        "status": "failed",
        "error": "the webhook answered HTTP 500",
        "attempts": 3,
    }
    assert h.record(result.run_id)["alert_errors"] == ["the webhook answered HTTP 500"]
    first, second, third = (r.arrived_at for r in broken.received)
    assert len(broken.received) == 3
    assert second - first >= 0.9 and third - second >= 3.9  # RETRY_DELAYS


# --- pings ----------------------------------------------------------------------------


def test_pings_mark_start_then_success_or_fail_and_a_hanging_one_delays_no_run(
    steps_folder: Path, tmp_path: Path, pings: Recorder
) -> None:
    jobs = [
        job("good", "ok", ping_url=f"{pings.url}/hc/good"),
        job("bad", "boom", ping_url=f"{pings.url}/hc/bad/"),
    ]
    h = harness(steps_folder, tmp_path / "poller.db", {}, jobs)
    try:
        assert h.run("good").status == "success"
        assert h.run("bad").status == "failed"
        arrived = pings.wait_received(4)
        assert {r.method for r in arrived} == {"GET"}
        assert [r.path for r in arrived] == [
            "/hc/good/start",
            "/hc/good",
            "/hc/bad/start",
            "/hc/bad/fail",
        ]
        assert all(r.headers["User-Agent"].startswith("Poller/") for r in arrived)

        pings.answer = "endless"  # a lying monitor: 200, then a body without end
        h.run("good")
        pings.wait_received(6)  # the second ping went out: the first did not hold the pinger
        assert pings.hung_up.wait(2)
        pings.answer = "empty"
        wait_until(lambda: pings.in_flight == 0, what="the endless answers to end")
        pings.max_concurrent = 0

        pings.delay_seconds = 30  # the monitor hangs; the pinger's own timeout is 10 s
        started = time.monotonic()
        runs = [h.run("good") for _ in range(3)]
        assert time.monotonic() - started < FAST * 3
        assert [r.status for r in runs] == ["success"] * 3
        assert max(r.duration_ms or 0 for r in runs) < FAST * 1000
        pings.wait_received(7)  # the next ping is in the monitor's hands, unanswered
        assert pings.in_flight == 1 and pings.max_concurrent == 1  # one at a time, queued
    finally:
        h.close()


# --- the rate limit -------------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_alert_arriving_as_its_window_ends_still_gets_the_held_ones_summarised(
    hook: Recorder,
) -> None:
    """The window's end races the next alert: whichever comes first, every held alert is
    in a summary and the new alert opens no second window of its own."""
    clock = FakeMonotonic()
    channel = WebhookChannel.model_validate({"type": "webhook", "url": f"{hook.url}/h"})
    sender = AlertSender({"hook": channel}, window_seconds=2, monotonic=clock)
    ended: list[tuple[str, str]] = []

    def done(delivery: Delivery, status: str, error: str | None) -> None:
        ended.append((delivery.alert.subject, status))

    def alert(job_id: str, n: int) -> Alert:
        return Alert(kind="failure", job_id=job_id, subject=f"{job_id} failed ({n})")

    try:
        assert sender.submit(alert("j", 1), ("hook",), done) == "pending"
        hook.wait_for(1)
        clock.now = 0.5
        assert sender.submit(alert("j", 2), ("hook",), done) == "held"
        # The sender thread now sleeps until the window's end (1.5 s); the next alert
        # comes first, after the end by the clock.
        clock.now = 2.5
        assert sender.submit(alert("j", 3), ("hook",), done) == "held"
        clock.now = 5.0
        assert sender.submit(alert("k", 1), ("hook",), done) == "pending"  # wakes the thread
        bodies = [body for _, body in hook.wait_for(4, timeout=5)]
        assert sender.idle(5)
    finally:
        sender.close(1)
    of_j = [(b["held_back"], b["text"].splitlines()[0]) for b in bodies if b["job_id"] == "j"]
    assert of_j == [
        (0, "j failed (1)"),
        (1, "Poller: 1 more failure alert was held back for job j in the last 2s"),
        (1, "Poller: 1 more failure alert was held back for job j in the last 2s"),
    ]
    assert [b["text"].splitlines()[2] for b in bodies if b["held_back"]] == [
        "j failed (2)",
        "j failed (3)",
    ]
    assert len(hook.received) == 4 and sender.counts.held == 2


# --- with a real daemon ---------------------------------------------------------------


@pytest.fixture
def daemon_folder(folder: Path) -> Path:
    (folder / "alert_steps.py").write_text(STEPS)
    return folder


def function_job(job_id: str, function: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "every": "1s",
        "integrationIDs": [[{"function": f"alert_steps:{function}"}]],
        **fields,
    }


def lateness(run: dict[str, Any]) -> timedelta:
    return datetime.fromisoformat(run["started_at"]) - datetime.fromisoformat(run["scheduled_for"])


def duration(run: dict[str, Any]) -> timedelta:
    return datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])


def test_a_refusing_and_a_hanging_channel_are_retried_recorded_and_delay_no_run(
    daemon_folder: Path, daemons: list[DaemonProcess]
) -> None:
    with Recorder(delay_seconds=10) as slow:
        refused = f"http://127.0.0.1:{unused_port()}/hook"
        config = config_with(
            function_job("broken", "boom", alerts={"channels": ["slow", "refused"]}),
            tick_job("steady"),
            alerts={
                "slow": {"type": "webhook", "url": f"{slow.url}/slow", "timeout_seconds": 1},
                "refused": {"type": "webhook", "url": refused, "timeout_seconds": 1},
            },
        )
        daemon = launch(daemons, daemon_folder, config)
        first = daemon.wait_runs("broken", 1, status="failed")[-1]
        # Three attempts on each channel: at once, 1 s after the first failed, 4 s after
        # the second; the slow one takes its full 1 s timeout each time.
        entries = wait_until(
            lambda: (
                (
                    alerts := next(
                        r for r in daemon.runs("broken") if r["run_id"] == first["run_id"]
                    )["alerts"]
                )
                and all(e["status"] == "failed" for e in alerts)
                and alerts
            ),
            timeout=20,
            what="both deliveries to fail for good",
        )
        arrivals = [r.arrived_at for r in slow.received]
        daemon.stop()
    assert [(e["channel"], e["attempts"], e["error"]) for e in entries] == [
        ("slow", 3, "no answer within 1 s"),
        ("refused", 3, "could not connect (ConnectionError)"),
    ]
    record = next(r for r in daemon.runs("broken") if r["run_id"] == first["run_id"])
    assert record["alert_errors"] == ["no answer within 1 s", "could not connect (ConnectionError)"]
    # The sender's lines carry the job and run they are about, as the run's own lines do.
    assert (
        f"[job=broken run={first['run_id']}] alerts: failure alert of job broken over slow, "
        "attempt 1 failed: no answer within 1 s; tried again"
    ) in daemon.log()
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 1.9 and arrivals[2] - arrivals[1] >= 4.9
    broken = daemon.runs("broken")
    assert {r["status"] for r in broken} == {"failed"}
    assert max(duration(r) for r in broken) < timedelta(seconds=FAST)  # no 10 s delay in it
    later = [r for r in broken if r["run_id"] != first["run_id"]]
    # The rate limit's window (300 s) holds the later failures back.
    assert later and {tuple(e["status"] for e in r["alerts"]) for r in later} == {("held", "held")}
    # Both jobs fired every second, on time, all the while the channel hung.
    for job_id in ("broken", "steady"):
        runs = sorted(
            (r for r in daemon.runs(job_id) if r["started_at"] >= first["started_at"]),
            key=lambda r: r["scheduled_for"],
        )
        assert len(runs) >= 7 and {r["trigger"] for r in runs} == {"schedule"}
        assert max(lateness(r) for r in runs) < timedelta(seconds=0.5)
        fires = [datetime.fromisoformat(r["scheduled_for"]) for r in runs]
        assert {b - a for a, b in itertools.pairwise(fires)} == {timedelta(seconds=1)}
    assert {r["status"] for r in daemon.runs("steady")} == {"success"}


def test_failures_every_second_send_one_alert_then_one_summary_of_the_held_ones(
    daemon_folder: Path, daemons: list[DaemonProcess], hook: Recorder
) -> None:
    config = config_with(
        function_job(
            "flaky",
            "fail_first",
            input={"failures": 3},
            alerts={"on": ["failure"], "channels": ["hook"]},
        ),
        alerts={"hook": {"type": "webhook", "url": f"{hook.url}/hook"}},
        alert_window_seconds=3,
    )
    daemon = launch(daemons, daemon_folder, config)
    alert, note = hook.wait_received(2, timeout=15)
    # Two more runs after the summary: nothing else can have been held back.
    wait_until(
        lambda: len(daemon.runs("flaky", "success")) >= 3, timeout=10, what="3 successful runs"
    )
    daemon.stop()
    assert [(r.json["kind"], r.json["held_back"]) for r in hook.received] == [
        ("failure", 0),
        ("failure", 2),
    ]
    failed = sorted(daemon.runs("flaky", "failed"), key=lambda r: r["started_at"])
    assert [r["reason"].rpartition(": ")[2] for r in failed] == [
        "failure 1 of 3",
        "failure 2 of 3",
        "failure 3 of 3",
    ]
    assert [[(e["kind"], e["status"]) for e in r["alerts"]] for r in failed] == [
        [("failure", "sent")],
        [("failure", "held")],
        [("failure", "held")],
    ]
    assert (alert.json["run_id"], alert.json["held_back"]) == (failed[0]["run_id"], 0)
    summary = note.json
    assert (summary["kind"], summary["held_back"], summary["run_id"]) == (
        "failure",
        2,
        failed[2]["run_id"],  # the latest held back
    )
    assert summary["text"].startswith(
        "Poller: 2 more failure alerts were held back for job flaky in the last 3s\n"
        "The latest:\nPoller: job flaky failed\n"
    )
    assert 2.9 <= note.arrived_at - alert.arrived_at < 4.5  # at the window's end
    assert all(r["alerts"] == [] for r in daemon.runs("flaky", "success"))  # no recovery asked


def test_a_misfire_and_an_invalid_config_on_disk_are_alerted_by_the_daemon(
    daemon_folder: Path, daemons: list[DaemonProcess], hook: Recorder
) -> None:
    config = config_with(
        tick_job("t", misfire_grace_seconds=0.5),
        alerts={"hook": {"type": "webhook", "url": f"{hook.url}/hook"}},
        default_alerts={"on": ["misfire", "daemon"], "channels": ["hook"]},
    )
    daemon = launch(daemons, daemon_folder, config)
    daemon.wait_runs("t", 1, status="success")
    daemon.signal(signal.SIGSTOP)  # the whole process is late: its fires in the pause misfire
    try:
        time.sleep(2.5)
    finally:
        daemon.signal(signal.SIGCONT)
    [(_, misfire)] = hook.wait_for(1)
    skipped = wait_until(
        lambda: [r for r in daemon.runs("t", "skipped") if r["run_id"] == misfire["run_id"]],
        what="the misfire record",
    )[0]
    assert misfire["kind"] == "misfire" and skipped["reason"].startswith("misfire, more than")
    assert misfire["text"].startswith(f"Poller: job t missed a fire\nSkipped: {skipped['reason']}")
    wait_until(
        lambda: [e["status"] for e in daemon.runs("t", "skipped")[0]["alerts"]] == ["sent"],
        what="the misfire's delivery to be recorded",
    )

    broken = json.loads(json.dumps(config))
    broken["jobs"][0]["ping_url"] = f"ftp://hc-ping.example/{PING_SECRET}"
    daemon.write_config(json.dumps(broken, indent=2))
    [_, (_, alert)] = hook.wait_for(2)
    assert alert["kind"] == "daemon" and alert["job_id"] == "-"
    assert alert["text"].startswith("Poller: the config file is invalid (config.json:")
    assert "jobs[0].ping_url" in alert["text"] and alert["text"].endswith(
        "; the last good config runs on"
    )
    assert_secret_free(PING_SECRET, json.dumps(alert))
    runs = len(daemon.runs("t", "success"))
    daemon.wait_runs("t", runs + 1, status="success")  # the last good config runs on
    assert len(hook.received) == 2
