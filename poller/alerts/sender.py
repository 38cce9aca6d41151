"""Alert delivery off the run's path: one thread, a bounded queue, retries, a rate limit.

- `submit` never blocks and never raises: it decides (rate limit) and queues. The queue holds
  MAX_QUEUED deliveries; when full, the oldest is dropped and counted (`dropped`).
- A failed attempt is tried again after RETRY_DELAYS; a retry waits in a heap, so the
  deliveries behind it go on. Each delivery ends "sent" or "failed" (or "dropped"), told
  to its `on_done`.
- Rate limit, per job and kind: the first alert of a window goes out; the others of the
  next `window_seconds` are held back, and at the window's end one summary says how many
  and repeats the latest. The windows live in memory: a restart opens new ones.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from poller.alerts.channels import DeliveryError, deliver
from poller.alerts.messages import Alert, summary
from poller.config.alerts import SmtpChannel, WebhookChannel
from poller.logs import run_context
from poller.timeformat import seconds_text

log = logging.getLogger(__name__)

MAX_QUEUED = 1000
RETRY_DELAYS = (1.0, 4.0)
"""Seconds before the second and third attempts; a delivery fails after the third."""

ChannelMap = Mapping[str, WebhookChannel | SmtpChannel]
Done = Callable[["Delivery", str, str | None], None]


@dataclass(slots=True)
class Delivery:
    """One alert to one channel."""

    alert: Alert
    channel: str
    on_done: Done
    attempts: int = 0


@dataclass(slots=True)
class _Window:
    opened: float
    channels: tuple[str, ...]
    on_done: Done
    held: int = 0
    latest: Alert | None = None


@dataclass(slots=True)
class Counts:
    """What /metrics counts."""

    sent: int = 0
    failed: int = 0
    held: int = 0
    dropped: int = 0


class AlertSender:
    def __init__(
        self,
        channels: ChannelMap,
        window_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channels = dict(channels)
        self._window = window_seconds
        self._monotonic = monotonic
        self._queue: deque[Delivery] = deque()
        self._retries: list[tuple[float, int, Delivery]] = []
        self._order = itertools.count()
        self._windows: dict[tuple[str, str], _Window] = {}
        self._busy = 0  # deliveries being attempted now
        self._dropped: list[Delivery] = []
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self.counts = Counts()
        self._thread = threading.Thread(target=self._loop, name="alert-sender", daemon=True)
        self._thread.start()

    def configure(self, channels: ChannelMap, window_seconds: float) -> None:
        """A reload's channels and window (deliveries queued for a removed channel fail)."""
        with self._cond:
            self._channels = dict(channels)
            self._window = window_seconds

    def submit(self, alert: Alert, channels: tuple[str, ...], on_done: Done) -> str:
        """Queue `alert` to each channel: "pending", or "held" by the rate limit."""
        key = (alert.job_id, alert.kind)
        with self._cond:
            now = self._monotonic()
            window = self._windows.get(key)
            if window is not None and now - window.opened >= self._window:
                # Ended, but the thread has not seen it yet: its summary must not be lost.
                window = self._end_window(key, window, now)
            if window is not None:
                window.held += 1
                window.latest = alert
                window.channels = channels
                self.counts.held += 1
                self._cond.notify()
                return "held"
            if self._window > 0:
                self._windows[key] = _Window(now, channels, on_done)
            for channel in channels:
                self._enqueue(Delivery(alert, channel, on_done))
            self._cond.notify()
        return "pending"

    def idle(self, timeout: float) -> bool:
        """Wait until no delivery is queued, retried or under way (held ones do not count)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._retries or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self, timeout: float) -> bool:
        """Let queued deliveries go out for up to `timeout` s, then stop; True if all went."""
        went = self.idle(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        return went

    # --- the thread -----------------------------------------------------------------

    def _enqueue(self, delivery: Delivery) -> None:
        if len(self._queue) >= MAX_QUEUED:
            oldest = self._queue.popleft()
            self.counts.dropped += 1
            log.warning(
                "alerts: the queue is full (%d); the oldest %s alert of job %s is dropped",
                MAX_QUEUED,
                oldest.alert.kind,
                oldest.alert.job_id,
            )
            self._dropped.append(oldest)  # told by the thread, outside the lock
        self._queue.append(delivery)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    dropped, self._dropped = self._dropped, []
                    delivery = self._next()
                    if dropped or delivery is not None:
                        break
                    if self._closing:
                        return
                    self._cond.wait(self._wait_seconds())
                if delivery is not None:
                    self._busy += 1
                    channel = self._channels.get(delivery.channel)
            for lost in dropped:
                lost.on_done(lost, "dropped", "the alert queue was full")
            if delivery is None:
                continue
            try:
                # Its lines carry the job and run the alert is about, as the run's did.
                alert = delivery.alert
                with run_context(alert.job_id, alert.run_id or "-"):
                    self._attempt(delivery, channel)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _next(self) -> Delivery | None:
        """The next delivery due (queued ones first), opening summaries due; under the lock."""
        now = self._monotonic()
        for key, window in list(self._windows.items()):
            if now - window.opened >= self._window:
                self._end_window(key, window, now)
        if self._queue:
            return self._queue.popleft()
        if self._retries and self._retries[0][0] <= now:
            return heapq.heappop(self._retries)[2]
        return None

    def _end_window(self, key: tuple[str, str], window: _Window, now: float) -> _Window | None:
        """Close an ended window; under the lock. One that held alerts back queues their
        summary and opens the next window (the summary is its one alert); else it goes."""
        if not window.held or window.latest is None:
            del self._windows[key]
            return None
        note = summary(window.latest, window.held, seconds_text(self._window))
        self._windows[key] = fresh = _Window(now, window.channels, window.on_done)
        for channel in window.channels:
            self._enqueue(Delivery(note, channel, window.on_done))
        return fresh

    def _wait_seconds(self) -> float:
        now = self._monotonic()
        dues = [self._retries[0][0]] if self._retries else []
        dues += [w.opened + self._window for w in self._windows.values() if w.held]
        return max(0.01, min(dues) - now) if dues else 5.0

    def _attempt(self, delivery: Delivery, channel: WebhookChannel | SmtpChannel | None) -> None:
        delivery.attempts += 1
        alert = delivery.alert
        try:
            if channel is None:
                raise DeliveryError(f"no channel {delivery.channel!r} since the last reload")
            deliver(channel, alert)
        except DeliveryError as err:
            retry = delivery.attempts <= len(RETRY_DELAYS) and channel is not None
            log.warning(
                "alerts: %s alert of job %s over %s, attempt %d failed: %s%s",
                alert.kind,
                alert.job_id,
                delivery.channel,
                delivery.attempts,
                err.reason,
                "; tried again" if retry else "; given up",
            )
            if retry:
                due = self._monotonic() + RETRY_DELAYS[delivery.attempts - 1]
                with self._cond:
                    heapq.heappush(self._retries, (due, next(self._order), delivery))
                return
            with self._cond:
                self.counts.failed += 1
            delivery.on_done(delivery, "failed", err.reason)
            return
        except Exception as err:  # a bug here must not end the thread
            log.exception("alerts: delivering over %s failed unexpectedly", delivery.channel)
            with self._cond:
                self.counts.failed += 1
            delivery.on_done(delivery, "failed", f"{type(err).__name__}")
            return
        log.info(
            "alerts: %s alert of job %s sent over %s", alert.kind, alert.job_id, delivery.channel
        )
        with self._cond:
            self.counts.sent += 1
        delivery.on_done(delivery, "sent", None)
