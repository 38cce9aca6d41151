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
- A for_each entry (SPEC §9) runs its sub-chain once per item, the item as its input, at
  most max_parallel at once, each item in a thread of its own (an item's calls are a
  chain's: the run's deadline and cancel hold for them). An item's failure is its own; the
  entry fails only when every item did. Its items' request IDs derive from the entry's
  place and the item's index.
- Request IDs are uuid5 of (job id, scheduled_for, step, entry) when the run has a
  scheduled_for, so running the same fire again sends the same IDs; otherwise they derive
  from the run id (random per manual run, kept by a redelivered Kafka run request).
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from poller.clock import Clock, SystemClock
from poller.config.chain import ForEachEntry, HttpEntry, calls_at_once, entry_id, leaf_entries
from poller.config.models import Config, Job
from poller.errors import CallError, ChainError, PollerError, RunCancelledError, RunStoppedError
from poller.kafka.listing import remember
from poller.logs import item_context, run_context, run_logger
from poller.redaction import Redactor
from poller.run.changes import changed_items, paths_changed
from poller.run.conditions import evaluate
from poller.run.paths import kind_of, resolve
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
from poller.run.steps import EntryOutput, StepRunner
from poller.run.transport import Session
from poller.store import Store, StoreError
from poller.timeformat import ms_since, seconds_text, utc_text
from poller.timing import blackout_reason, zone_of

if TYPE_CHECKING:
    from poller.monitor import ChangeTracker
    from poller.run.client import ClientPool

log = run_logger(__name__)

MAX_ITEM_ERRORS = 20
"""A run record lists this many for_each item errors (`errors`); the count says the rest."""
REQUEST_ID_NAMESPACE = uuid.UUID("5b0c3f8e-61a4-5d2e-9c1b-7f0e2a4d6c88")


def blackout_of(job: Job, config: Config, at: datetime) -> str | None:
    """Why a run of `job` at `at` (its fire, else its start) is skipped, if it falls on
    one of its blackout days or dates."""
    if not job.blackout_days and not job.blackout_dates:
        return None
    return blackout_reason(job, at, zone_of(config.schedule(job)))


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
    changes: ChangeTracker | None = None,
    store: Store | None = None,
) -> RunResult:
    """Run `job`'s chain once and return its record; never raises.

    Args:
        scheduled_for: the fire this run belongs to (aware); None for a manual run.
        input: merged over job.input (its keys win) as the first step's input.
        dry_run: overrides job.dry_run.
        force: ignore blackout days and dates.
        cancelled: asked before each entry; once True the run ends `interrupted` there
            (Ctrl-C in `app.py run`; the daemon lets a run finish within its grace).
        changes: compares a successful output with the job's baseline (detect_changes);
            None: not compared.
        store: keeps what `files` entries listed, once the run succeeds; None: every
            file is new each time.
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
            changes,
            store,
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
    changes: ChangeTracker | None,
    store: Store | None,
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
        comparison = None
        if status == "success" and job.detect_changes and changes and not is_dry_run:
            comparison = changes.compare(job, output, run_id)  # the output before its cap
        changed = None if comparison is None else comparison.changed
        diff = None if comparison is None else comparison.diff
        if changed and comparison is not None:
            log.info(
                "change detected: %d path(s) differ from run %s",
                paths_changed(diff),
                comparison.against,
            )
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
            items_processed=tally.processed,
            items_succeeded=tally.succeeded,
            items_failed=tally.failed,
            errors=tuple(scrub.text(error) for error in tally.errors[:MAX_ITEM_ERRORS]),
            changed=changed,
            diff=diff,
            changes_detected=changed_items(diff) if changed else 0,
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
    tally = Tally()
    try:
        if not force:
            blackout = blackout_of(job, config, scheduled_for or started_at)
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
        has_http = any(isinstance(e, HttpEntry) for e in leaf_entries(job.integrationIDs))
        session = Session(calls_at_once(job.integrationIDs)) if has_http else None
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
                clock=clock,
                store=store,
            )
            data = {**job.input, **(input or {})}
            deadline, timeout = None, ""
            if job.timeout_seconds is not None:
                deadline = time.monotonic() + job.timeout_seconds
                timeout = f"timeout after {seconds_text(job.timeout_seconds)}"
            limits = Limits(deadline, timeout, cancelled)
            base = request_base(job.id, scheduled_for, run_id)
            stop, output = _run_chain(job.integrationIDs, runner, data, steps, base, limits, tally)
        finally:
            if session is not None:
                session.close()
        if stop is None:
            _remember_listings(runner)
        return finish("success" if stop is None else "failed", stop, steps, output)
    except (RunStoppedError, RunCancelledError) as err:
        log.warning("run interrupted: %s", err)
        return finish("interrupted", str(err), steps, None)
    except Exception as err:  # the run boundary: a failure goes into the record
        log.exception("run failed unexpectedly")
        return finish("failed", cap_error(describe_error(err)), steps, None)


def _remember_listings(runner: StepRunner) -> None:
    """Keep what the run's `files` entries listed: their files are not new next time. A
    store that cannot take it costs the run nothing; the files come again."""
    store = runner.store
    if store is None:
        return
    for listing in runner.listings:
        try:
            remember(listing, store, runner.clock.now())
        except StoreError as err:
            log.warning(
                "the listing of %s was not kept (%s); its files come again", listing.scope, err
            )


@dataclass(slots=True)
class Tally:
    """A run's for_each counts (SPEC §9), added up over its for_each entries."""

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True, slots=True)
class Limits:
    """What every entry of a run checks before it starts: the deadline and a cancel."""

    deadline: float | None
    timeout: str
    cancelled: Callable[[], bool]


def _run_chain(
    steps: list[list[Any]],
    runner: StepRunner,
    data: dict[str, Any],
    records: list[StepResult],
    base: bytes,
    limits: Limits,
    tally: Tally,
) -> tuple[str | None, dict[str, Any]]:
    """Run the steps, appending a record per entry; returns (why it stopped, output)."""
    stop: str | None = None
    deadline = limits.deadline
    for s, step in enumerate(steps):
        merged: dict[str, Any] = {}
        produced = False
        for e, entry in enumerate(step):
            name = entry_id(entry)
            where = f"integrationIDs[{s}][{e}] {name}"
            if stop is None and deadline is not None and time.monotonic() >= deadline:
                stop = limits.timeout
            if stop is not None:
                records.append(StepResult(name, "skipped", s, e, reason=f"not run: {stop}"))
                continue
            if limits.cancelled():
                raise RunCancelledError(where)
            when = None if isinstance(entry, str | ForEachEntry) else entry.when
            if when is not None:
                holds, why = evaluate(when, data)
                if not holds:
                    log.info("%s skipped: %s", where, why)
                    records.append(StepResult(name, "skipped", s, e, reason=why))
                    continue
            began = time.monotonic()
            try:
                if isinstance(entry, ForEachEntry):
                    item_base = _sha1_bits(base, f"{s}.{e}").to_bytes(16)
                    result = _fan_out(entry, runner, data, item_base, limits, tally, where)
                else:
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
                    stop = limits.timeout
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
                stop = limits.timeout
                continue
            merged.update(result.output)
            produced = True
        if stop is None and produced:
            data = merged
    return stop, data


def _fan_out(
    entry: ForEachEntry,
    runner: StepRunner,
    data: dict[str, Any],
    base: bytes,
    limits: Limits,
    tally: Tally,
    where: str,
) -> EntryOutput:
    """Run a for_each's sub-chain once per item, at most max_parallel at once.

    Raises ChainError when the list is not there, or when every item failed."""
    found, items, why = resolve(data, entry.for_each)
    if not found or not isinstance(items, list):
        raise ChainError(
            runner.job_id,
            f"for_each {entry.for_each!r}: "
            + (why if not found else f"expected a list, found {kind_of(items)}"),
        )
    chosen: list[tuple[int, Any]] = []
    for index, item in enumerate(items):
        holds = entry.when is None or evaluate(entry.when, _item_input(item))[0]
        if holds:
            chosen.append((index, item))
    if len(chosen) < len(items):
        log.info(
            "%s: %d of %d item(s) left out by when", where, len(items) - len(chosen), len(items)
        )

    def one(index: int, item: Any) -> dict[str, Any]:
        key = _item_key(entry, index, item)
        records: list[StepResult] = []
        item_base = _sha1_bits(base, str(index)).to_bytes(16)
        began = time.monotonic()
        with item_context(key):
            try:
                stop, output = _run_chain(
                    entry.steps, runner, _item_input(item), records, item_base, limits, tally
                )
            except RunCancelledError:
                raise
            except RunStoppedError as err:
                stop, output = str(err), {}
            if stop is None:
                log.debug("item done in %d ms", ms_since(began))
            else:
                log.warning("item failed after %d ms: %s", ms_since(began), stop)
        result: dict[str, Any] = {
            "index": index,
            "key": key,
            "status": "failed" if stop else "success",
        }
        result.update({"error": stop} if stop else {"output": output})
        return result

    # Items run in threads of their own; each keeps the run's log context.
    with ThreadPoolExecutor(max_workers=max(1, min(entry.max_parallel, len(chosen)))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, one, i, item) for i, item in chosen]
        done = [future.result() for future in futures]
    failed = [item for item in done if item["status"] == "failed"]
    with tally.lock:
        tally.processed += len(done)
        tally.failed += len(failed)
        tally.succeeded += len(done) - len(failed)
        tally.errors.extend(f"item {item['key']}: {item['error']}" for item in failed)
    if done and len(failed) == len(done):
        raise ChainError(
            runner.job_id,
            f"every item failed ({len(done)} of {len(done)}); the first: {failed[0]['error']}",
        )
    output = {"items": done, "succeeded": len(done) - len(failed), "failed": len(failed)}
    return EntryOutput(output, 1)


def _item_input(item: Any) -> dict[str, Any]:
    """The sub-chain's input: the item itself, or {"item": value} for one that is no object."""
    return dict(item) if isinstance(item, dict) else {"item": item}


def _item_key(entry: ForEachEntry, index: int, item: Any) -> str:
    """How logs and results name an item: its `key` field's value, else its index."""
    if entry.key is not None:
        found, value, _ = resolve(_item_input(item), entry.key)
        if found and isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)[:80]
    return str(index)


def redact_step(step: StepResult, redactor: Redactor) -> StepResult:
    """A step record with secrets masked in its error and reason."""
    if step.error is None and step.reason is None:
        return step
    error = None if step.error is None else redactor.text(step.error)
    reason = None if step.reason is None else redactor.text(step.reason)
    return dataclasses.replace(step, error=error, reason=reason)


def request_base(job_id: str, scheduled_for: datetime | None, run_id: str) -> bytes:
    """The namespace of a run's request IDs, a UUID's 16 bytes: fixed per fire, else per
    run (a run request redelivered to another Kafka worker keeps its run id, so its calls
    keep their IDs)."""
    name = run_id if scheduled_for is None else f"{job_id}@{utc_text(scheduled_for)}"
    return uuid_bits(_sha1_bits(REQUEST_ID_NAMESPACE.bytes, name), 5).to_bytes(16)


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
