"""`app.py run JOB_ID`: one job's chain now, in the foreground; its record on stdout.

The chain runs on a worker thread while the main thread waits for it or for Ctrl-C
(SIGINT) or SIGTERM. A stop ends every retry backoff at once (the clock's stop) and waits
STOP_WAIT_SECONDS for the run to end by itself, as `interrupted` with its steps so far (no
entry starts after the stop); a
call still in flight past that (a platform that does not answer) cannot be cut short, so
the record is then made here, `interrupted` without steps. Either way it is printed, kept
in the history, and the exit status is 128 + the signal (130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
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
from poller.config.models import Config
from poller.errors import ConfigError
from poller.redaction import Redactor
from poller.run import chain
from poller.run.client import ClientPool
from poller.run.results import RunResult, new_run_id, started_result
from poller.store import open_store

log = logging.getLogger("poller")

STOP_WAIT_SECONDS = 2.0
"""After Ctrl-C, how long the run may take to end by itself (a backoff ends at once)."""


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
    clients = ClientPool(config.environments, clock, redactor=redactor)
    run_id = new_run_id()
    started = started_result(job.id, trigger="manual", started_at=clock.now(), run_id=run_id)
    ended: list[RunResult] = []
    woken = Wakeup()
    signum_seen: list[int] = []  # appended by the handlers: no locks

    def work() -> None:
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
    record = result.to_dict()
    save_manual_run(config, record)
    print(json.dumps(record, indent=2), file=record_out, flush=True)
    if ended:  # else a call still uses them; the process ends now anyway
        clients.close()
    if signum_seen:
        return 128 + signum_seen[0]
    return EXIT_FAILED if result.status == "failed" else EXIT_OK


def save_manual_run(config: Config, record: dict[str, object]) -> None:
    """Keep a manual run in the history too, so `history` and the API show it."""
    try:
        store = open_store(config.settings)
    except Exception as err:  # the run happened; a history problem must not hide its result
        log.warning("the run could not be saved in %s: %s", config.settings.state_db, err)
        return
    try:
        store.save(record)
    except Exception as err:
        log.warning("the run could not be saved in %s: %s", config.settings.state_db, err)
    finally:
        store.close()
