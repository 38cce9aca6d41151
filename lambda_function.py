"""Runs one job's chain from an event: `lambda_handler(event, context)` -> the SPEC §4 run dict.

Deployable unchanged as an AWS Lambda function. Each call builds its own client pool and
HTTP session and closes them (no state kept between invocations), and always returns a
result: an invalid event becomes a failed run whose reason says what is wrong.

The event:
    job            a job object as in config.json (required)
    environments   {name: environment} as in config.json; `${NAME}` / `${NAME:-default}` in
                   any string is read from the process environment, so secrets stay out of
                   the event
    settings       as in config.json (only `timezone` matters here)
    input          object merged over job.input for the first step
    dry_run        overrides job.dry_run
    force          true runs even on a blackout day or date
    run            {"run_id", "trigger", "scheduled_for" (ISO 8601 with offset)}
    config_dir     folder `function` entries import from (default: this file's folder)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lookup import ClientPool
from poller.clock import SystemClock
from poller.redaction import Redactor
from poller.run.chain import describe_error, run_job
from poller.run.invocation import EventError, failed_run, parse_event

HERE = Path(__file__).resolve().parent


def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Run the event's job once; returns RunResult.to_dict() and never raises."""
    clock = SystemClock()
    try:
        invocation = parse_event(event, os.environ, HERE)
    except EventError as err:
        return failed_run(event, str(err), clock.now())
    try:
        redactor = Redactor(invocation.config.secret_values())
        clients = ClientPool(invocation.config.environments, clock=clock, redactor=redactor)
        try:
            result = run_job(
                invocation.job,
                invocation.config,
                clients,
                run_id=invocation.run_id,
                trigger=invocation.trigger,
                scheduled_for=invocation.scheduled_for,
                input=invocation.input,
                dry_run=invocation.dry_run,
                force=invocation.force,
                clock=clock,
            )
        finally:
            clients.close()
    except Exception as err:  # the handler boundary: a result, never a traceback
        return failed_run(event, describe_error(err), clock.now())
    return result.to_dict()
