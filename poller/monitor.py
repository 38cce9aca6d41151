"""What happens around a run besides its chain (SPEC §9): change detection, alerts, pings.

- Change detection runs as the run ends (poller.run.chain asks the ChangeTracker), so
  `changed` and `diff` are in the record from its first write. The baseline is a store note.
- After the run, `after_run` decides its alerts: `failure` (a failed run, or one with failed
  items), `recovery` (the first run without failure after one or more; the job's "failing"
  state is a store note, so a restart between them still gives one recovery), `change`.
  The record gets one entry per alert and channel, "pending" (or "held" by the rate limit);
  `dispatch` hands them to the sender once the record is saved, and each delivery's end
  updates the record's entry (sent, failed with its error, dropped).
- `interrupted` and skipped runs are neither failure nor recovery; a misfire is its own kind.
- Nothing here can change a run's status or timing: every failure is logged and swallowed.

A Monitor that is not `live` (`app.py run` without --alerts) compares but keeps no
baseline, changes no state and sends nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from poller.alerts.messages import Alert, about_daemon, about_misfire, about_run
from poller.alerts.pings import Event, Pinger
from poller.alerts.sender import AlertSender, Delivery
from poller.clock import Clock
from poller.config.models import Config, Job
from poller.redaction import Redactor
from poller.run.changes import Baseline, Comparison, compare, leaves_of
from poller.run.results import RunResult
from poller.store import Store, StoreError
from poller.timeformat import utc_text

log = logging.getLogger(__name__)

BASELINE_NOTE = "baseline"
ALERT_NOTE = "alerts"
CLOSE_SECONDS = 5.0
"""At a stop, how long queued alerts and pings may still go out."""

Send = tuple[Alert, tuple[str, ...]]


class ChangeTracker:
    """Compares successful runs' outputs with each job's baseline (a store note)."""

    def __init__(self, store: Store | None, redactor: Redactor, *, keep: bool) -> None:
        self.store = store
        self.redactor = redactor
        self.keep = keep
        self._baselines: dict[str, Baseline | None] = {}
        # Other daemons of a shared store move the baseline too: read it at every run.
        self._cached = store is None or not store.shared
        self._lock = threading.Lock()  # runs of one job compare one after another

    def compare(self, job: Job, output: dict[str, Any] | None, run_id: str) -> Comparison | None:
        """This output against the job's baseline (which it then becomes); None when the
        store cannot be read or written (the run's `changed` is then unknown)."""
        compared = leaves_of(output, job.detect_changes)
        with self._lock:
            try:
                previous = self._baseline(job.id)
                comparison = compare(previous, compared, job.detect_changes, run_id, self.redactor)
                if self.keep and comparison.changed is not False:
                    if self.store is not None:
                        self.store.save_note(job.id, BASELINE_NOTE, comparison.baseline.to_json())
                    self._baselines[job.id] = comparison.baseline
            except StoreError as err:
                log.warning("change detection of job %s skipped: %s", job.id, err)
                self._baselines.pop(job.id, None)
                return None
        return comparison

    def _baseline(self, job_id: str) -> Baseline | None:
        if job_id not in self._baselines or not self._cached:
            stored = None if self.store is None else self.store.note(job_id, BASELINE_NOTE)
            self._baselines[job_id] = Baseline.from_json(stored)
        return self._baselines[job_id]


@dataclass(slots=True)
class _Pending:
    record: RunResult
    entries: list[dict[str, Any]]


class Monitor:
    def __init__(
        self,
        config: Config,
        store: Store | None,
        redactor: Redactor,
        clock: Clock,
        *,
        live: bool = True,
        save: Callable[[RunResult], None] | None = None,
    ) -> None:
        """`save` keeps a record whose alert entries changed (the daemon: store.save_later)."""
        self.config = config
        self.store = store
        self.redactor = redactor
        self.clock = clock
        self.live = live
        self.save = save
        self.changes = ChangeTracker(store, redactor, keep=live)
        self.sender: AlertSender | None = None
        self.pinger: Pinger | None = None
        if live:
            settings = config.settings
            self.sender = AlertSender(settings.alerts, settings.alert_window_seconds)
            self.pinger = Pinger()
        self.api_url: str | None = None
        """The API's address once it listens (its real port): alerts link to its page."""
        self._failing: dict[str, dict[str, Any]] = {}
        self._cached = store is None or not store.shared  # as ChangeTracker's baselines
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def configure(self, config: Config) -> None:
        """A reload: new channels, window, jobs' alerts."""
        self.config = config
        if self.sender is not None:
            self.sender.configure(config.settings.alerts, config.settings.alert_window_seconds)

    # --- runs -------------------------------------------------------------------------

    def started(self, job: Job) -> None:
        self._ping(job, "start")

    def after_run(self, job: Job, result: RunResult) -> tuple[RunResult, list[Send]]:
        """The run's alerts decided and entered in its record; `dispatch` them once it is
        saved. Pings its end."""
        if not self.live or result.status in ("skipped", "interrupted", "running"):
            return result, []
        failed = result.status == "failed" or result.items_failed > 0
        self._ping(job, "fail" if failed else "success")
        kinds = []
        try:
            if self._note_outcome(job.id, failed):
                kinds.append("failure" if failed else "recovery")
        except StoreError as err:
            log.warning("job %s: its alert state could not be kept: %s", job.id, err)
            if failed:
                kinds.append("failure")
        if result.changed:
            kinds.append("change")
        return self._decide(job, result, kinds, about_run)

    def after_skip(self, job: Job, record: RunResult) -> None:
        """A fire the loop skipped: a misfire alert when the job asks for one."""
        if not self.live or not (record.reason or "").startswith("misfire"):
            return
        record, sends = self._decide(
            job, record, ["misfire"], lambda kind, r, url, at: about_misfire(r, url, at)
        )
        if sends and self.save is not None:
            self.save(record)
        self.dispatch(record, sends)

    def dispatch(self, record: RunResult, sends: list[Send]) -> None:
        if self.sender is None:
            return
        for alert, channels in sends:
            if self.sender.submit(alert, channels, self._delivered) == "held":
                for channel in channels:  # no delivery will end: the entry ends here
                    self._settle(alert, channel, "held", None, attempts=0)

    def daemon_alert(self, line: str) -> None:
        """Poller itself is in trouble (the store, the config file): to the channels of
        settings.default_alerts when it lists "daemon"."""
        chosen = self.config.settings.default_alerts
        if self.sender is None or chosen is None or "daemon" not in chosen.on:
            return
        alert = about_daemon(self.redactor.text(line), utc_text(self.clock.now()))
        self.sender.submit(alert, tuple(chosen.channels), self._delivered)

    def idle(self, timeout: float) -> bool:
        """Wait until every queued alert and ping went out (or failed)."""
        pinged = self.pinger is None or self.pinger.idle(timeout)
        return (self.sender is None or self.sender.idle(timeout)) and pinged

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        if self.sender is not None:
            self.sender.close(timeout)
        if self.pinger is not None:
            self.pinger.close(timeout)

    # --- inside -----------------------------------------------------------------------

    def _decide(
        self,
        job: Job,
        record: RunResult,
        kinds: list[str],
        build: Callable[[str, dict[str, Any], str | None, str], Alert],
    ) -> tuple[RunResult, list[Send]]:
        chosen = self.config.alerts_of(job)
        wanted = [kind for kind in kinds if chosen is not None and kind in chosen.on]
        if chosen is None or not wanted or self.sender is None:
            return record, []
        data = record.to_dict()
        at = utc_text(record.finished_at or record.started_at)
        url = self._link(record.run_id)
        sends: list[Send] = []
        entries: list[dict[str, Any]] = []
        channels = tuple(chosen.channels)
        for kind in wanted:
            alert = build(kind, data, url, at)
            sends.append((alert, channels))
            entries.extend(
                {"kind": kind, "channel": channel, "status": "pending", "error": None}
                for channel in channels
            )
        record = dataclasses.replace(record, alerts=tuple(entries))
        with self._lock:
            self._pending[record.run_id] = _Pending(record, entries)
        return record, sends

    def _delivered(self, delivery: Delivery, status: str, error: str | None) -> None:
        self._settle(delivery.alert, delivery.channel, status, error, delivery.attempts)

    def _settle(
        self, alert: Alert, channel: str, status: str, error: str | None, attempts: int
    ) -> None:
        """A delivery ended (or was held): its entry in the run's record says how."""
        if alert.run_id is None or alert.held_back:
            return
        with self._lock:
            pending = self._pending.get(alert.run_id)
            if pending is None:
                return
            for entry in pending.entries:
                if entry["kind"] == alert.kind and entry["channel"] == channel:
                    entry.update(
                        status=status,
                        error=None if error is None else self.redactor.text(error),
                        attempts=attempts,
                    )
            if all(entry["status"] != "pending" for entry in pending.entries):
                del self._pending[alert.run_id]
            record = dataclasses.replace(
                pending.record, alerts=tuple(dict(entry) for entry in pending.entries)
            )
            pending.record = record
        if self.save is not None:
            try:
                self.save(record)
            except Exception:
                log.exception("run %s: its alert deliveries could not be recorded", record.run_id)

    def _note_outcome(self, job_id: str, failed: bool) -> bool:
        """Keep whether the job is failing; True when this run is an alert's occasion (a
        failure, or the first success after failures)."""
        with self._lock:
            state = self._failing.get(job_id) if self._cached else None
            if state is None:
                stored = None if self.store is None else self.store.note(job_id, ALERT_NOTE)
                state = dict(stored) if isinstance(stored, dict) else {"failing": False}
                self._failing[job_id] = state
            was_failing = bool(state.get("failing"))
            if failed:
                state.update(failing=True, failed_runs=int(state.get("failed_runs") or 0) + 1)
            elif was_failing:
                state.update(failing=False, failed_runs=0)
            else:
                return False
            if self.store is not None:
                self.store.save_note(job_id, ALERT_NOTE, state)
        return True

    def _ping(self, job: Job, event: Event) -> None:
        if self.live and self.pinger is not None and job.ping_url is not None:
            self.pinger.ping(job.id, job.ping_url.get_secret_value(), event)

    def _link(self, run_id: str) -> str | None:
        settings = self.config.settings
        base = settings.public_url or self.api_url
        if base is None and settings.api.enabled:  # `app.py run`: where the daemon listens
            base = f"http://{settings.api.host}:{settings.api.port}"
        return None if base is None else f"{base}/ui#run={run_id}"
