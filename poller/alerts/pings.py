"""Outside pings (SPEC §9): a job's `ping_url` is called on start (URL/start), success (URL)
and failure (URL/fail), healthchecks.io's convention, so a monitor elsewhere notices when
runs stop coming. Pings go out on a thread of their own (never behind a slow alert
channel, never in a run's way); one that fails is tried once more, then logged. The URL is a
secret: the redactor masks it wherever it would appear.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Literal

import requests

from poller.alerts.channels import USER_AGENT
from poller.logs import run_context

log = logging.getLogger(__name__)

MAX_QUEUED = 1000
TIMEOUT_SECONDS = 10.0
RETRY_SECONDS = 1.0

Event = Literal["start", "success", "fail"]


def ping_target(url: str, event: Event) -> str:
    base = url.rstrip("/")
    return base if event == "success" else f"{base}/{event}"


class Pinger:
    def __init__(self) -> None:
        self._queue: deque[tuple[str, str, Event]] = deque(maxlen=MAX_QUEUED)
        self._cond = threading.Condition(threading.Lock())
        self._busy = False
        self._closing = False
        self.sent = 0
        self.failed = 0
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._thread = threading.Thread(target=self._loop, name="pinger", daemon=True)
        self._thread.start()

    def ping(self, job_id: str, url: str, event: Event) -> None:
        """Queue a ping; never blocks (a full queue forgets its oldest)."""
        with self._cond:
            self._queue.append((job_id, url, event))
            self._cond.notify()

    def idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self, timeout: float) -> None:
        self.idle(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        self._session.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if self._closing:
                        return
                    self._cond.wait()
                job_id, url, event = self._queue.popleft()
                self._busy = True
            try:
                with run_context(job_id, "-"):  # its lines say which job's monitor it was
                    self._send(job_id, url, event)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, job_id: str, url: str, event: Event) -> None:
        why = ""
        for attempt in (1, 2):
            try:
                answer = self._session.get(
                    ping_target(url, event),
                    timeout=TIMEOUT_SECONDS,
                    allow_redirects=False,
                    stream=True,  # only the status counts: a body cannot hold the pinger
                )
                answer.close()
                if answer.status_code < 400:
                    self.sent += 1
                    log.debug("ping %s of job %s sent", event, job_id)
                    return
                why = f"HTTP {answer.status_code}"
            except requests.RequestException as err:
                why = type(err).__name__
            if attempt == 1:
                time.sleep(RETRY_SECONDS)
        self.failed += 1
        log.warning("job %s: the %s ping failed twice (%s)", job_id, event, why)
