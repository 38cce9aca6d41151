"""What the API's actions do beyond HTTP: start runs, wait for their end, change config.json
through the editor and wait until the daemon has reloaded the change. Errors become the
HTTP answers the endpoints document.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException

from poller.apihttp import ProblemError
from poller.config import Job
from poller.configedit import (
    ConfigConflictError,
    EditResult,
    JobExistsError,
    JobNotFoundError,
)
from poller.daemon import Daemon
from poller.errors import ConfigError
from poller.store import Store, StoreError

APPLY_WAIT_SECONDS = 5.0
"""How long an edit waits for the daemon to reload it before answering `applied: false`."""
POLL_SECONDS = 0.05


def find_job(jobs: dict[str, Job], job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


def trigger(daemon: Daemon, job: Job) -> str | None:
    try:
        return daemon.trigger(job)
    except RuntimeError:  # the pool is shut down: the daemon is stopping
        raise HTTPException(503, "the daemon is stopping; no new runs") from None
    except StoreError as err:
        raise HTTPException(503, f"the run cannot be recorded: {err}") from None


def wait_for_end(store: Store, reader: Store, run_id: str, timeout: float) -> dict[str, Any] | None:
    """The run's final record (the daemon's queued one, or the written one), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = store.queued(run_id) or reader.get(run_id)
        if record is not None and record.get("status") != "running":
            return record
        time.sleep(POLL_SECONDS)
    return None


def edit(action: Callable[..., EditResult], *args: Any) -> EditResult:
    try:
        return action(*args)
    except JobNotFoundError as err:
        raise HTTPException(404, str(err)) from None
    except JobExistsError as err:
        raise HTTPException(409, str(err)) from None
    except ConfigConflictError as err:
        raise ProblemError(409, str(err), err.problems) from None
    except ConfigError as err:
        raise ProblemError(422, "the change would make config.json invalid", err.problems) from None


def wait_applied(daemon: Daemon, result: EditResult) -> bool:
    """Wait (bounded) until the daemon's reload shows the job as the file now has it."""
    wanted = result.config.job_map.get(result.job_id)
    deadline = time.monotonic() + APPLY_WAIT_SECONDS
    while daemon.config.job_map.get(result.job_id) != wanted:
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True
