"""`app.py run JOB_ID`: one job's chain now, in the foreground; its record on stdout.

The chain runs on a worker thread while the main thread waits for it or for Ctrl-C
(SIGINT) or SIGTERM. A stop ends every retry backoff at once (the clock's stop) and waits
STOP_WAIT_SECONDS for the run to end by itself, as `interrupted` with its steps so far (no
entry starts after the stop); a
call still in flight past that (a platform that does not answer) cannot be cut short, so
the record is then made here, `interrupted` without steps. Either way it is printed, kept
in the history, and the exit status is 128 + the signal (130 for Ctrl-C).

A job with `detect_changes` is compared with its baseline, so the record says whether the
answer changed; without `--alerts` that baseline stays as the daemon left it, and no alert
or ping goes out (SPEC §9). With `--alerts` the run is one like the daemon's: it moves the
baseline and the job's failing state, pings its `ping_url`, and the command waits up to
ALERT_WAIT_SECONDS for its alerts to be delivered, so the printed record says how they went.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

from poller.clock import SystemClock, Wakeup
from poller.commands.options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigSource,
    close_ids,
    load,
    open_log,
    say,
)
from poller.config.chain import calls_at_once
from poller.config.kafka import with_environment
from poller.config.models import Config, Job
from poller.errors import ConfigError
from poller.monitor import Monitor
from poller.redaction import Redactor
from poller.run import chain
from poller.run.client import ClientPool
from poller.run.results import RunResult, new_run_id, started_result
from poller.store import Store, open_store

log = logging.getLogger("poller")

STOP_WAIT_SECONDS = 2.0
"""After Ctrl-C, how long the run may take to end by itself (a backoff ends at once)."""
ALERT_WAIT_SECONDS = 30.0
"""With --alerts, how long the command waits for the run's alerts (and retries) to end."""


def cmd_run(source: ConfigSource, args: argparse.Namespace) -> int:
    loaded = load(source)
    if isinstance(loaded, (str, ConfigError)):
        say(str(loaded))
        return EXIT_USAGE
    config = loaded
    job = config.job_map.get(args.job_id)
    if job is None:
        hint = close_ids(args.job_id, config.job_map)
        say(f"app.py run: no job {args.job_id!r} in {source.path}; {hint}")
        return EXIT_USAGE
    redactor = Redactor(config.secret_values())
    if not open_log(config, redactor, stderr=True):
        return EXIT_FAILED
    clock = SystemClock()
    clients = ClientPool(
        config.environments,
        clock,
        redactor=redactor,
        connections=calls_at_once(job.integrationIDs),
        kafka=with_environment(config.settings.kafka, os.environ),
    )
    store = open_history_store(config)
    saved: list[RunResult] = []
    monitor = Monitor(
        config, store, redactor, clock, live=args.alerts, save=lambda record: saved.append(record)
    )
    run_id = new_run_id()
    started = started_result(job.id, trigger="manual", started_at=clock.now(), run_id=run_id)
    ended: list[RunResult] = []
    woken = Wakeup()
    signum_seen: list[int] = []  # appended by the handlers: no locks

    def work() -> None:
        monitor.started(job)
        try:
            ended.append(
                chain.run_job(
                    job,
                    config,
                    clients,
                    run_id=run_id,
                    trigger="manual",
                    force=args.force,
                    clock=clock,
                    cancelled=lambda: bool(signum_seen),
                    changes=None if store is None else monitor.changes,
                    store=store,
                )
            )
        finally:
            woken.set()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        signum_seen.append(signum)
        clock.stop()
        woken.set()

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    record_out = sys.stdout
    # stdout holds the record alone: what the chain's functions print goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        threading.Thread(target=work, name="run", daemon=True).start()  # daemon: see above
        while not ended and not signum_seen:
            woken.wait(60.0)
        if not ended:
            deadline = time.monotonic() + STOP_WAIT_SECONDS
            while not ended and time.monotonic() < deadline and len(signum_seen) < 2:
                woken.wait(deadline - time.monotonic())
    # Another Ctrl-C from here on must not cut the record short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if ended:
        result = ended[0]
    else:
        name = signal.Signals(signum_seen[0]).name
        reason = f"stopped by {name} while a call was in flight; its steps are not known"
        log.warning("run interrupted: %s", reason)
        result = dataclasses.replace(
            started, status="interrupted", finished_at=clock.now(), reason=reason
        )
    result = send_alerts(monitor, job, result, store, saved)
    save_manual_run(config, store, result)
    print(json.dumps(result.to_dict(), indent=2), file=record_out, flush=True)
    if ended:  # else a call still uses them; the process ends now anyway
        clients.close()
    if store is not None:
        store.close()
    if signum_seen:
        return 128 + signum_seen[0]
    return EXIT_FAILED if result.status == "failed" else EXIT_OK


def open_history_store(config: Config) -> Store | None:
    """The state database, for the baseline and to keep the run; None (logged) when it
    cannot be opened: the run still happens, without change detection."""
    try:
        return open_store(config.settings)
    except Exception as err:  # the run happens anyway; a history problem must not stop it
        log.warning("%s cannot be opened: %s", config.settings.state_where, err)
        return None


def send_alerts(
    monitor: Monitor, job: Job, result: RunResult, store: Store | None, saved: list[RunResult]
) -> RunResult:
    """The run's alerts and its end's ping (with --alerts); the record as they ended."""
    try:
        result, sends = monitor.after_run(job, result)
    except Exception:  # alerts must never cost a run its record
        log.exception("job %s: run %s: deciding its alerts failed", job.id, result.run_id)
        return result
    monitor.dispatch(result, sends)
    if not monitor.idle(ALERT_WAIT_SECONDS):
        log.warning(
            "job %s: alerts still queued after %.0f s were not sent", job.id, ALERT_WAIT_SECONDS
        )
    monitor.close(0.0)
    return saved[-1] if saved else result


def save_manual_run(config: Config, store: Store | None, result: RunResult) -> None:
    """Keep a manual run in the history too, so `history` and the API show it."""
    if store is None:
        return
    try:
        store.save(result)
    except Exception as err:  # the run happened; a history problem must not hide its result
        log.warning("the run could not be saved in %s: %s", config.settings.state_where, err)
