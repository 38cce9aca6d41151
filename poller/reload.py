"""Hot reload: watch the config's folder, and turn a burst of file events into one parsed config.

The watchdog callback and SIGHUP only signal (set a flag, wake the clock). The reloader's
own thread waits for the file to stop changing, skips a save whose content is unchanged,
parses it, and leaves the result (a Config, or the ConfigError) for the loop to take:
the loop thread only applies, so a burst of saves or signals never delays a fire.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from poller.clock import Clock, Flag, Wakeup
from poller.config.models import Config
from poller.errors import ConfigError, Problem

log = logging.getLogger(__name__)

QUIET_SECONDS = 0.25
"""A save is taken as finished after this long without another event on the file."""
MAX_SETTLE_SECONDS = 5.0
IDLE_WAIT_SECONDS = 3600.0
"""The reload thread sleeps this long between changes (a change or a stop wakes it)."""
"""A file that keeps changing is read anyway after this long."""


class _Handler(FileSystemEventHandler):
    def __init__(self, path: Path, on_change: Callable[[], None]) -> None:
        self.path = path
        self.on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        # Editors save by rename (vim's backup dance, sed -i, temp-file writers), so the
        # config can appear as the destination of a move rather than as a modify.
        paths = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
        if paths & link_chain(self.path):
            self.on_change()


def link_chain(path: Path) -> set[str]:
    """`path` and every path its symlinks lead through, with the folders on the way.

    A Kubernetes ConfigMap mounts `config.json -> ..data/config.json` and swaps the
    `..data` link to publish a new version: the change shows as a move onto `..data`,
    never as an event on `config.json` itself. Computed again at each event, since the
    links move.
    """
    chain: set[str] = set()
    current = path
    for _ in range(40):  # as many links as the kernel follows
        chain.add(str(current))
        chain.update(
            str(parent)
            for parent in current.parents
            if parent != path.parent and parent.is_relative_to(path.parent)
        )
        try:
            target = current.readlink()
        except OSError:  # not a link (or gone): the end of the chain
            break
        current = target if target.is_absolute() else current.parent / target
    return chain


class ConfigWatcher:
    """Watches a config file's folder; `pending` is set whenever the file may have changed."""

    def __init__(self, path: Path) -> None:
        # Not resolved: a symlinked config is followed anew at every read.
        self.path = path.absolute()
        self.pending = Flag()  # SIGHUP's handler sets it too
        self.changed = Wakeup()
        self._observer = Observer()
        self._observer.schedule(_Handler(self.path, self.signal), str(self.path.parent))

    def signal(self) -> None:
        """Note a possible change and wake the reloader (also what SIGHUP calls)."""
        self.pending.set()
        self.changed.set()

    def start(self) -> None:
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()


class ConfigReloader:
    """Reads the config file once it has settled, on a thread of its own, and parses it."""

    def __init__(
        self,
        watcher: ConfigWatcher,
        clock: Clock,
        initial: bytes,
        parse: Callable[[str], Config],
    ) -> None:
        self.watcher = watcher
        self.clock = clock
        self.seen_hash = _digest(initial)
        self.parse = parse
        self.forced = Flag()  # SIGHUP: reload even when the content is the same
        self._ready: Config | ConfigError | None = None
        self._ready_lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="config-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self.watcher.changed.set()

    def take(self) -> Config | ConfigError | None:
        """The newest parsed save (or why it is invalid) not yet taken, else None."""
        with self._ready_lock:
            ready, self._ready = self._ready, None
        return ready

    def _run(self) -> None:
        while not self._stopped:
            if not self.watcher.pending.is_set():
                self.watcher.changed.wait(IDLE_WAIT_SECONDS)  # stop() wakes it too
                continue
            forced = self.forced.is_set()
            self.forced.clear()
            try:
                text = self.settle_and_read(force=forced)
                if text is None:
                    continue
                try:
                    ready: Config | ConfigError = (
                        text if isinstance(text, ConfigError) else self.parse(text)
                    )
                except ConfigError as err:
                    ready = err
                with self._ready_lock:
                    self._ready = ready
            except Exception:  # the reload boundary: this thread outlives any failure
                log.exception("reading %s failed; keeping the last good config", self.watcher.path)
                continue
            self.clock.wake()  # the loop applies it

    def settle_and_read(self, force: bool = False) -> str | ConfigError | None:
        """Wait until the file stops changing and return its text, or None when unchanged.

        `force` (SIGHUP) returns the text even when its content is the same as last time.
        A file that is gone or cannot be read once settled is a ConfigError (the daemon
        shows it as the file on disk being invalid); the next save is read whatever it holds.
        """
        started = time.monotonic()
        while True:
            self.watcher.pending.clear()
            if self.clock.sleep(QUIET_SECONDS):
                return None  # stopping
            waited = time.monotonic() - started
            if not self.watcher.pending.is_set() or waited > MAX_SETTLE_SECONDS:
                break
        try:
            data = self.watcher.path.read_bytes()
        except FileNotFoundError:
            # Deleted (a rename has settled by now): keep running; a save brings it back.
            self.seen_hash = ""
            return ConfigError([Problem(str(self.watcher.path), "", "file not found")])
        except OSError as err:  # a folder in its place, no permission, an I/O error
            self.seen_hash = ""
            reason = f"cannot be read ({err.strerror or err})"
            return ConfigError([Problem(str(self.watcher.path), "", reason)])
        digest = _digest(data)
        if digest == self.seen_hash and not force:
            log.debug("%s: saved without changes; nothing to reload", self.watcher.path)
            return None
        self.seen_hash = digest
        return data.decode("utf-8", errors="replace")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
