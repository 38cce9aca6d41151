"""Running one job's chain (SPEC §3): blackout, conditions, merging, stopping, timeout.

All I/O goes through poller.run.steps; `run_job` never raises: every failure, ours or a step's,
ends in the RunResult it returns. Semantics beyond the SPEC:

- Entries of a step run one after another, in order, all on the same input.
- A step's output is its successful entries' outputs merged left to right (dict.update);
  when no entry of a step succeeded (all skipped, or failed with continue_on_error), the
  step passes its input through unchanged.
- An entry that fails stops the chain unless it has continue_on_error. The run is "failed"
  only when the chain stopped; a run that went on past failed entries is "success", with
  the failures visible in its steps. `reason` is set only for skipped and failed runs.
- Entries that never started because the chain stopped are recorded "skipped" with a
  reason beginning "not run:", so `steps` always has one record per chain entry.
- timeout_seconds: a monotonic deadline is passed to every call and checked before and
  after each entry; past it the run fails with "timeout after Ns". A function cannot be
  interrupted: it can read `context.remaining_seconds()`, and if it returns late its own
  record stays truthful while the run fails with the timeout.
- The run's output is the last completed step's output (for a failed run: the input of the
  step that stopped it).
- Request IDs are uuid5 of (job id, scheduled_for, step, entry) when the run has a
  scheduled_for, so running the same fire again sends the same IDs; otherwise they derive
  from a random uuid4 per run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from poller.clock import Clock, SystemClock
from poller.config.chain import HttpEntry, entry_id
from poller.config.models import Config, Job
from poller.errors import CallError, ChainError, PollerError, RunCancelledError, RunStoppedError
from poller.logs import run_context, run_logger
from poller.redaction import Redactor
from poller.run.conditions import evaluate
from poller.run.results import (
    RunResult,
    RunStatus,
    StepResult,
    Trigger,
    cap_error,
    new_run_id,
    skipped_result,
    uuid_bits,
    uuid_text,
)
from poller.run.steps import StepRunner
from poller.run.transport import Session
from poller.timeformat import ms_since, seconds_text, utc_text
from poller.timing import blackout_reason, zone_of

if TYPE_CHECKING:
    from poller.run.client import ClientPool

log = run_logger(__name__)

REQUEST_ID_NAMESPACE = uuid.UUID("5b0c3f8e-61a4-5d2e-9c1b-7f0e2a4d6c88")


def run_job(
    job: Job,
    config: Config,
    clients: ClientPool,
    *,
    run_id: str | None = None,
    trigger: Trigger = "manual",
    scheduled_for: datetime | None = None,
    input: dict[str, Any] | None = None,
    dry_run: bool | None = None,
    force: bool = False,
    clock: Clock | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Run `job`'s chain once and return its record; never raises.

    Args:
        scheduled_for: the fire this run belongs to (aware); None for a manual run.
        input: merged over job.input (its keys win) as the first step's input.
        dry_run: overrides job.dry_run.
        force: ignore blackout days and dates.
        cancelled: asked before each entry; once True the run ends `interrupted` there
            (Ctrl-C in `app.py run`; the daemon lets a run finish within its grace).
    """
    clock = clock or SystemClock()
    run_id = run_id or new_run_id()
    with run_context(job.id, run_id):  # the lines of the client and transport carry the ids too
        return _run_job(
            job,
            config,
            clients,
            run_id,
            trigger,
            scheduled_for,
            input,
            dry_run,
            force,
            clock,
            cancelled,
        )


def _run_job(
    job: Job,
    config: Config,
    clients: ClientPool,
    run_id: str,
    trigger: Trigger,
    scheduled_for: datetime | None,
    input: dict[str, Any] | None,
    dry_run: bool | None,
    force: bool,
    clock: Clock,
    cancelled: Callable[[], bool],
) -> RunResult:
    started_at = clock.now()
    is_dry_run = job.dry_run if dry_run is None else dry_run

    def finish(
        status: RunStatus,
        reason: str | None,
        steps: list[StepResult],
        output: dict[str, Any] | None,
    ) -> RunResult:
        # The record leaves the process (history, API, stdout): what a platform echoed
        # back, a token read at login, a URL's password are masked here, once.
        scrub = clients.redactor
        result = RunResult(
            run_id=run_id,
            job_id=job.id,
            trigger=trigger,
            scheduled_for=scheduled_for,
            started_at=started_at,
            finished_at=clock.now(),
            status=status,
            reason=None if reason is None else scrub.text(reason),
            steps=tuple(redact_step(step, scrub) for step in steps),
            output=None if output is None else scrub.value(output),
            dry_run=is_dry_run,
        )
        # One INFO line per run (its start is at DEBUG): a busy daemon's log stays readable.
        log.info(
            "run finished: %s%s in %d ms (trigger %s%s)%s",
            status,
            " (dry run: nothing was sent)" if is_dry_run else "",
            result.duration_ms,
            trigger,
            f", scheduled for {utc_text(scheduled_for)}" if scheduled_for else "",
            f": {reason}" if reason else "",
        )
        return result

    steps: list[StepResult] = []
    try:
        if not force and (job.blackout_days or job.blackout_dates):
            zone = zone_of(config.schedule(job))
            blackout = blackout_reason(job, scheduled_for or started_at, zone)
            if blackout:
                log.info("run skipped: %s", blackout)
                return skipped_result(
                    job.id,
                    blackout,
                    trigger=trigger,
                    at=started_at,
                    scheduled_for=scheduled_for,
                    run_id=run_id,
                )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "run started (trigger %s%s%s)",
                trigger,
                f", scheduled for {utc_text(scheduled_for)}" if scheduled_for else "",
                ", dry run" if is_dry_run else "",
            )
        # A session costs time to build; only chains with plain HTTP entries need one, and
        # it lives as long as the run.
        has_http = any(isinstance(e, HttpEntry) for step in job.integrationIDs for e in step)
        session = Session() if has_http else None
        try:
            runner = StepRunner(
                config=config,
                clients=clients,
                session=session,
                environment=config.environment_name(job),
                job_id=job.id,
                run_id=run_id,
                scheduled_for=scheduled_for,
                dry_run=is_dry_run,
                logger=log,
            )
            data = {**job.input, **(input or {})}
            stop, output = _run_chain(job, runner, data, steps, scheduled_for, cancelled)
        finally:
            if session is not None:
                session.close()
        return finish("success" if stop is None else "failed", stop, steps, output)
    except (RunStoppedError, RunCancelledError) as err:
        log.warning("run interrupted: %s", err)
        return finish("interrupted", str(err), steps, None)
    except Exception as err:  # the run boundary: a failure goes into the record
        log.exception("run failed unexpectedly")
        return finish("failed", cap_error(describe_error(err)), steps, None)


def _run_chain(
    job: Job,
    runner: StepRunner,
    data: dict[str, Any],
    records: list[StepResult],
    scheduled_for: datetime | None,
    cancelled: Callable[[], bool],
) -> tuple[str | None, dict[str, Any]]:
    """Run the steps, appending a record per entry; returns (why it stopped, output)."""
    deadline, timeout = None, ""
    if job.timeout_seconds is not None:
        deadline = time.monotonic() + job.timeout_seconds
        timeout = f"timeout after {seconds_text(job.timeout_seconds)}"
    base = request_base(job.id, scheduled_for)
    stop: str | None = None
    for s, step in enumerate(job.integrationIDs):
        merged: dict[str, Any] = {}
        produced = False
        for e, entry in enumerate(step):
            name = entry_id(entry)
            where = f"integrationIDs[{s}][{e}] {name}"
            if stop is None and deadline is not None and time.monotonic() >= deadline:
                stop = timeout
            if stop is not None:
                records.append(StepResult(name, "skipped", s, e, reason=f"not run: {stop}"))
                continue
            if cancelled():
                raise RunCancelledError(where)
            when = None if isinstance(entry, str) else entry.when
            if when is not None:
                holds, why = evaluate(when, data)
                if not holds:
                    log.info("%s skipped: %s", where, why)
                    records.append(StepResult(name, "skipped", s, e, reason=why))
                    continue
            began = time.monotonic()
            try:
                result = runner.run(
                    entry, data, request_id=request_id(base, s, e), deadline=deadline
                )
            except RunStoppedError as err:  # the daemon is stopping: the run ends here
                records.append(
                    StepResult(name, "failed", s, e, err.attempts, ms_since(began), error=str(err))
                )
                raise
            # A step's failure is recorded and the chain decides what next; SystemExit too,
            # so a function calling sys.exit() cannot end a worker thread mid-run.
            except (Exception, SystemExit) as err:
                error = cap_error(describe_error(err))
                attempts = err.attempts if isinstance(err, CallError) else 1
                records.append(
                    StepResult(name, "failed", s, e, attempts, ms_since(began), error=error)
                )
                log.warning("%s failed after %d ms: %s", where, ms_since(began), error)
                if deadline is not None and time.monotonic() >= deadline:
                    stop = timeout
                elif isinstance(entry, str) or not entry.continue_on_error:
                    stop = error
                continue
            records.append(StepResult(name, "success", s, e, result.attempts, ms_since(began)))
            log.debug(
                "%s succeeded in %d ms (%d attempt%s)",
                where,
                ms_since(began),
                result.attempts,
                "" if result.attempts == 1 else "s",
            )
            if deadline is not None and time.monotonic() >= deadline:
                stop = timeout
                continue
            merged.update(result.output)
            produced = True
        if stop is None and produced:
            data = merged
    return stop, data


def redact_step(step: StepResult, redactor: Redactor) -> StepResult:
    """A step record with secrets masked in its error and reason."""
    if step.error is None and step.reason is None:
        return step
    error = None if step.error is None else redactor.text(step.error)
    reason = None if step.reason is None else redactor.text(step.reason)
    return dataclasses.replace(step, error=error, reason=reason)


def request_base(job_id: str, scheduled_for: datetime | None) -> bytes:
    """The namespace of a run's request IDs, a UUID's 16 bytes: fixed per fire, else random."""
    if scheduled_for is None:
        return uuid.uuid4().bytes
    fire = utc_text(scheduled_for)
    return uuid_bits(_sha1_bits(REQUEST_ID_NAMESPACE.bytes, f"{job_id}@{fire}"), 5).to_bytes(16)


def request_id(base: bytes, step: int, entry: int) -> str:
    """The X-Request-ID of integrationIDs[step][entry] in a run (the same on every retry)."""
    return uuid_text(_sha1_bits(base, f"{step}.{entry}"), 5)


def _sha1_bits(namespace: bytes, name: str) -> int:
    """The 128 bits of uuid.uuid5(namespace, name) before its version is set (RFC 4122)."""
    digest = hashlib.sha1(namespace + name.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:16])


def describe_error(err: BaseException) -> str:
    """A one-line error text for a run record: our own errors as they read, others typed."""
    if isinstance(err, ChainError):
        return err.reason
    if isinstance(err, CallError) and err.attempts == 0 and err.reason:
        return err.reason  # never sent (e.g. an undefined environment): the cause alone
    if isinstance(err, PollerError):
        return str(err)
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
