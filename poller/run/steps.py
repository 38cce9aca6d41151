"""Executors of the chain entries that are one call each: integration, plain HTTP, function,
`files` (list a source) and `kafka` (publish the input).

They do the I/O of one entry and raise on failure; judging conditions, merging outputs and
recording results is the chain's business (poller.run.chain).

Choices:
- integration: the payload is the incoming input with the entry's `input` merged over it.
- http: the request body is the configured `json` exactly as written; the chain's input is
  not sent (use an integration or a function entry to forward data). The output is the
  response JSON object; a JSON array or scalar becomes {"data": ...}, a non-JSON body
  {"text": ...}.
- function: `"module:callable"` is imported from the config folder only (a module that
  lives anywhere else, such as `os`, is refused), with that folder at the front of
  sys.path for the duration of the import only (put sibling imports at module top level);
  modules are cached by name in sys.modules, so names are process-wide and a changed module
  is picked up only after a restart. The callable gets a copy of the input (with the entry's
  `input` merged over it) and a FunctionContext; it returns a dict (None counts as {}),
  made JSON-clean (a datetime becomes its string) before the next step sees it.
- files: lists the source anew each run (no connection is kept) and outputs the files new
  or changed since the last *successful* run's listing, as a worker's events; the chain
  keeps the listing only when the run succeeds, so a failed run lists them again.
- kafka: one JSON message of the input, acknowledged before the entry ends (no retry: a
  failure fails the entry, and the run's own retries are the operator's to decide).
- dry run: integration and http calls are only logged ("dry run: would POST <url>", never
  headers, query values or bodies) and return their input unchanged, so later steps see
  plausible data and their conditions decide as they would; functions are called with
  `context.dry_run` True and decide themselves.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.machinery import PathFinder
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poller.clock import Clock
from poller.config.chain import (
    Entry,
    FilesEntry,
    FunctionEntry,
    HttpEntry,
    IntegrationEntry,
    KafkaEntry,
)
from poller.config.kafka import PollingJob
from poller.config.models import Config
from poller.errors import ChainError
from poller.kafka.listing import Listing, list_files
from poller.run.client import display_url, http_call
from poller.run.paths import resolve
from poller.sources import open_source
from poller.store import Store
from poller.timeformat import json_default

if TYPE_CHECKING:
    import requests

    from poller.run.client import ClientPool

_IMPORT_LOCK = threading.Lock()  # sys.path edits and first imports happen one at a time
_FROM_FOLDER: set[tuple[str, Path]] = set()  # modules found to live in that config folder


@dataclass(frozen=True, slots=True)
class FunctionContext:
    """The second argument of a chain function."""

    dry_run: bool
    job_id: str
    run_id: str
    scheduled_for: datetime | None
    logger: logging.LoggerAdapter[logging.Logger]
    request_id: str
    deadline: float | None = None

    def remaining_seconds(self) -> float | None:
        """Seconds left before the job's timeout_seconds, or None without a timeout."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


@dataclass(frozen=True, slots=True)
class EntryOutput:
    output: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class StepRunner:
    """Runs the entries of one run; holds what every entry needs (clients, session, ids)."""

    config: Config
    clients: ClientPool
    session: requests.Session | None  # for http entries; None when the chain has none
    environment: str
    job_id: str
    run_id: str
    scheduled_for: datetime | None
    dry_run: bool
    logger: logging.LoggerAdapter[logging.Logger]
    clock: Clock
    store: Store | None = None
    """Keeps what `files` entries listed; None: every file is new each time."""
    listings: list[Listing] = field(default_factory=list)
    """What `files` entries listed, kept in `store` once the run has succeeded."""

    def run(
        self, entry: Entry, data: dict[str, Any], *, request_id: str, deadline: float | None
    ) -> EntryOutput:
        """Execute one entry on `data`; raises PollerError (or whatever a function raises)."""
        if isinstance(entry, str):
            return self._integration(entry, {}, data, request_id, deadline)
        if isinstance(entry, IntegrationEntry):
            return self._integration(entry.id, entry.input, data, request_id, deadline)
        if isinstance(entry, HttpEntry):
            return self._http(entry, data, request_id, deadline)
        if isinstance(entry, FunctionEntry):
            return self._function(entry, data, request_id, deadline)
        if isinstance(entry, FilesEntry):
            return self._files(entry)
        if isinstance(entry, KafkaEntry):
            return self._kafka(entry, data)
        raise TypeError("a for_each entry is run by poller.run.chain, not as one call")

    def _files(self, entry: FilesEntry) -> EntryOutput:
        """List a source: the files new or changed since the last successful run (SPEC
        §10), each as a worker's event; a dry run lists too, and keeps nothing."""
        call = entry.files
        job = PollingJob(
            job_id=self.job_id,
            source_config=call.source_config,
            file_pattern=call.file_pattern,
            emit=call.emit,
        )
        source = open_source(call.source_config, os.environ)
        try:
            listing = list_files(job, source, self.store, self.clock.now())
        finally:
            source.close()
        if self.store is not None and not self.dry_run:
            self.listings.append(listing)
        files = [event.value for event in listing.events]
        return EntryOutput({"files": files, "new": len(files), "matched": listing.matched}, 1)

    def _kafka(self, entry: KafkaEntry, data: dict[str, Any]) -> EntryOutput:
        """Publish the input as one JSON message, keyed by the value at `key`."""
        call = entry.kafka
        key = None
        if call.key is not None:
            found, value, why = resolve(data, call.key)
            if not found:
                raise ChainError(self.job_id, f"kafka key {call.key!r}: {why}")
            key = value if isinstance(value, str) else json.dumps(value, default=json_default)
        if self.dry_run:
            self.logger.info(
                "dry run: would publish input keys %s to %s", sorted(data) or "none", call.topic
            )
            return EntryOutput(dict(data), 0)
        # A message leaves Poller: masked as every output is, but a ${NAME} left for its
        # reader (a worker fills a polling job's from its own environment) stays.
        message = self.clients.redactor.value(data, keep_placeholders=True)
        return EntryOutput(self.clients.publisher.publish(call.topic, key, message), 1)

    def _integration(
        self,
        integration_id: str,
        extra: dict[str, Any],
        data: dict[str, Any],
        request_id: str,
        deadline: float | None,
    ) -> EntryOutput:
        payload = {**data, **extra}
        if self.dry_run:
            env = self.config.environments.get(self.environment)
            if env is None:
                target = f"integration {integration_id} (environment {self.environment!r} "
                target += "is not defined)"
                method = "POST"
            else:
                method = env.execute.method.upper()
                path = env.execute.path.replace("{integration_id}", integration_id)
                target = display_url(env.base_url + path)
            self.logger.info(
                "dry run: would %s %s with input keys %s (request id %s)",
                method,
                target,
                sorted(payload) or "none",
                request_id,
            )
            return EntryOutput(payload, 0)
        client = self.clients.get(self.environment)
        result = client.execute(integration_id, payload, request_id=request_id, deadline=deadline)
        return EntryOutput(dict(result.output), result.attempts)

    def _http(
        self, entry: HttpEntry, data: dict[str, Any], request_id: str, deadline: float | None
    ) -> EntryOutput:
        call = entry.http
        method = call.method.upper()
        if self.dry_run:
            self.logger.info(
                "dry run: would %s %s%s%s (request id %s)",
                method,
                display_url(call.url),
                f" with params {sorted(call.params)}" if call.params else "",
                " and a JSON body" if call.json_ is not None else "",
                request_id,
            )
            return EntryOutput(dict(data), 0)
        assert self.session is not None, "run_job gives a session to chains with http entries"
        result = http_call(
            self.session,
            method,
            call.url,
            headers=call.headers,
            params=call.params,
            json_body=call.json_,
            timeout_seconds=call.timeout_seconds,
            max_response_bytes=call.max_response_bytes,
            request_id=request_id,
            deadline=deadline,
            clock=self.clock,
            redactor=self.clients.redactor,
        )
        return EntryOutput(dict(result.output), result.attempts)

    def _function(
        self, entry: FunctionEntry, data: dict[str, Any], request_id: str, deadline: float | None
    ) -> EntryOutput:
        function = load_function(entry.function, self.config.base_dir, self.job_id)
        context = FunctionContext(
            dry_run=self.dry_run,
            job_id=self.job_id,
            run_id=self.run_id,
            scheduled_for=self.scheduled_for,
            logger=self.logger,
            request_id=request_id,
            deadline=deadline,
        )
        result = function(copy.deepcopy({**data, **entry.input}), context)
        if result is None:
            return EntryOutput({}, 1)
        if not isinstance(result, dict):
            raise ChainError(
                self.job_id,
                f"function {entry.function} returned {type(result).__name__}, expected a dict",
            )
        # Steps pass JSON to each other: a datetime or a set becomes a string here, not
        # a serialisation error in the next integration call.
        normalised: dict[str, Any] = json.loads(json.dumps(result, default=json_default))
        return EntryOutput(normalised, 1)


def load_function(ref: str, base_dir: Path, job_id: str = "-") -> Callable[..., Any]:
    """Import `"module:callable"` from `base_dir`, and only from there.

    A module found anywhere else on sys.path (the standard library, site-packages) is
    refused: a config, or an edit through the API, must not reach `os:system` or
    `subprocess:run`.
    Raises:
        ChainError: the module is not in `base_dir`, cannot be imported, or has no such
            callable.
    """
    module_name, _, attr = ref.partition(":")
    module = sys.modules.get(module_name)
    if module is None or (module_name, base_dir) not in _FROM_FOLDER:
        with _IMPORT_LOCK:
            module = _import(module_name, ref, base_dir.resolve(), job_id)
            _FROM_FOLDER.add((module_name, base_dir))
    function = getattr(module, attr, None)
    if not callable(function):
        raise ChainError(job_id, f"function {ref}: module {module_name} has no callable {attr!r}")
    return function  # type: ignore[no-any-return]


def _import(module_name: str, ref: str, folder: Path, job_id: str) -> Any:
    top = module_name.partition(".")[0]
    cannot = f"function {ref}: cannot import {module_name} from {folder}"
    if top not in sys.modules and PathFinder.find_spec(top, [str(folder)]) is None:
        raise ChainError(job_id, f"{cannot} (no module {top} there)")
    added = str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ChainError(job_id, f"{cannot} ({err})") from None
    finally:
        if added and str(folder) in sys.path:
            sys.path.remove(str(folder))
    file: str | None = getattr(module, "__file__", None)
    places = [file] if file else list(getattr(module, "__path__", []))  # or a namespace package
    if not places or not all(Path(place).resolve().is_relative_to(folder) for place in places):
        where = f"it is {places[0]}" if places else "it is built in"
        raise ChainError(job_id, f"{cannot}: {where}; functions come from the config's folder only")
    return module
