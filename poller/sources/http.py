"""`http` source: the files of a web server's directory index, read as nginx's JSON
autoindex or as any HTML index (then one HEAD per file for its size, date and ETag). It
never leaves the index's URL (no other host, nothing above it) and bounds every request in
time, every index in bytes and a listing in entries.
"""

from __future__ import annotations

import codecs
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import requests
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import ReadTimeoutError

from poller.redaction import mask_url
from poller.sources.base import MAX_DEPTH, FileInfo, SourceError

if TYPE_CHECKING:
    from poller.config.sources import HttpSource

log = logging.getLogger(__name__)

MAX_INDEX_BYTES = 10 * 1024 * 1024
"""An index page larger than this (after decompression) is refused, not read on."""
MAX_ENTRIES = 100_000
"""Entries (files and folders) of one listing, all folders together."""
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of an index: `name` is decoded and a single path segment."""

    name: str
    url: str
    is_folder: bool
    has_metadata: bool = False
    """True when the index gave size and date (JSON), so no HEAD is needed."""
    size: int | None = None
    modified_at: datetime | None = None


class IndexSource:
    """The files below `url` (a folder's URL, ending in "/"), through one requests.Session."""

    def __init__(
        self, session: requests.Session, url: str, identity: str, timeout_seconds: float
    ) -> None:
        self.identity = identity
        self._session = session
        self._url = url
        self._timeout_seconds = timeout_seconds
        self._entries = 0

    def files(self, recursive: bool) -> Iterator[FileInfo]:
        self._entries = 0
        yield from self._walk(self._url, "", recursive, 0)

    def _walk(self, url: str, prefix: str, recursive: bool, depth: int) -> Iterator[FileInfo]:
        for entry in self._index(url, prefix):
            self._entries += 1
            if self._entries > MAX_ENTRIES:
                reason = f"more than {MAX_ENTRIES} entries"
                raise SourceError(self.identity, reason, is_retryable=False)
            path = prefix + entry.name
            if entry.is_folder:
                if recursive and depth < MAX_DEPTH:
                    yield from self._walk(entry.url, path + "/", recursive, depth + 1)
            elif entry.has_metadata:
                yield FileInfo(path, entry.size, entry.modified_at)
            elif (info := self._head(entry.url, path)) is not None:
                yield info

    def _index(self, url: str, where: str) -> list[Entry]:
        """The entries of the index at `url` ([] for a subfolder gone since its parent was
        read); `where` is its path below the base, for error texts."""
        with self._request("GET", url, where, stream=True) as response:
            status = response.status_code
            if status in (404, 410):
                if where:
                    return []
                reason = f"no such index (HTTP {status})"
                raise SourceError(self.identity, reason, is_retryable=False)
            if status != 200:
                raise self._status_error(where, status, response.headers.get("Location"))
            body = self._body(response, where)
            content_type = response.headers.get("Content-Type", "")
        if "json" in content_type or body.lstrip()[:1] == b"[":
            return self._json_entries(body, url, where)
        links = LinkParser(url)
        links.feed(body.decode(charset(content_type), errors="replace"))
        links.close()
        if links.is_overflowing:
            reason = _at(where, f"more than {MAX_ENTRIES} links")
            raise SourceError(self.identity, reason, is_retryable=False)
        return list(links.entries.values())

    def _body(self, response: requests.Response, where: str) -> bytes:
        """The index's body, streamed: at most MAX_INDEX_BYTES within timeout_seconds, so a
        server that sends forever, or one byte at a time, is cut off."""
        limit = f"index larger than {MAX_INDEX_BYTES // (1024 * 1024)} MiB"
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_INDEX_BYTES:
            raise SourceError(self.identity, _at(where, limit), is_retryable=False)
        deadline = time.monotonic() + self._timeout_seconds
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=True):
                size += len(chunk)
                if size > MAX_INDEX_BYTES:
                    raise SourceError(self.identity, _at(where, limit), is_retryable=False)
                if time.monotonic() > deadline:
                    reason = f"index not read within {self._timeout_seconds:g} s"
                    raise SourceError(self.identity, _at(where, reason))
                chunks.append(chunk)
        except ReadTimeoutError:
            reason = f"timed out after {self._timeout_seconds:g} s"
            raise SourceError(self.identity, _at(where, reason)) from None
        except (TransportError, OSError) as err:
            reason = f"index cut off ({type(err).__name__})"
            raise SourceError(self.identity, _at(where, reason)) from None
        return b"".join(chunks)

    def _json_entries(self, body: bytes, url: str, where: str) -> list[Entry]:
        """nginx `autoindex_format json`: [{"name", "type", "mtime", "size"}, ...]."""
        try:
            items = json.loads(body)
        except ValueError:
            reason = _at(where, "index is not valid JSON")
            raise SourceError(self.identity, reason, is_retryable=False) from None
        if not isinstance(items, list):
            reason = "index is not a JSON list (nginx autoindex_format json)"
            raise SourceError(self.identity, _at(where, reason), is_retryable=False)
        if len(items) > MAX_ENTRIES:
            reason = f"more than {MAX_ENTRIES} entries"
            raise SourceError(self.identity, _at(where, reason), is_retryable=False)
        entries = []
        for item in items:
            entry = json_entry(item, url)
            if entry is None:
                log.debug("%s: %sskipped an index entry: %.200r", self.identity, where, item)
            else:
                entries.append(entry)
        return entries

    def _head(self, url: str, path: str) -> FileInfo | None:
        """The file at `url` as HEAD tells it; None when it has gone since the listing."""
        # identity: the file's own size, not that of a compressed answer.
        headers = {"Accept-Encoding": "identity"}
        with self._request("HEAD", url, path, headers=headers) as response:
            status, answered = response.status_code, response.headers
        if status in (404, 410):
            return None
        if 200 <= status < 300:
            length = answered.get("Content-Length", "")
            return FileInfo(
                path,
                int(length) if length.isdigit() else None,
                http_date(answered.get("Last-Modified")),
                etag=bare_etag(answered.get("ETag")),
            )
        if 300 <= status < 400 or status in (405, 501):
            return FileInfo(path, None, None)  # redirected (not followed), or no HEAD here
        raise self._status_error(path, status, None)

    def _request(self, method: str, url: str, where: str, **kwargs: Any) -> requests.Response:
        timeout = self._timeout_seconds
        try:
            # Redirects are not followed: one could lead to another host, and the session's
            # headers (credentials among them) would go along.
            return self._session.request(
                method, url, timeout=(timeout, timeout), allow_redirects=False, **kwargs
            )
        except requests.Timeout:
            raise SourceError(self.identity, _at(where, f"timed out after {timeout:g} s")) from None
        except requests.exceptions.SSLError:
            reason = "TLS handshake failed (certificate?)"
            raise SourceError(self.identity, _at(where, reason), is_retryable=False) from None
        except requests.ConnectionError:
            raise SourceError(self.identity, _at(where, "cannot connect")) from None
        except requests.RequestException as err:
            reason = f"request failed ({type(err).__name__})"
            raise SourceError(self.identity, _at(where, reason)) from None

    def _status_error(self, where: str, status: int, location: str | None) -> SourceError:
        if status in (401, 403):
            reason, is_retryable = f"access refused (HTTP {status})", False
        elif status in (408, 429) or status >= 500:
            reason, is_retryable = f"server error (HTTP {status})", True
        elif 300 <= status < 400:
            target = f" to {mask_url(location)}" if location else ""
            reason, is_retryable = f"redirected{target} (HTTP {status}), not followed", False
        else:
            reason, is_retryable = f"HTTP {status}", False
        return SourceError(self.identity, _at(where, reason), is_retryable=is_retryable)

    def close(self) -> None:
        self._session.close()


class LinkParser(HTMLParser):
    """The links of an HTML index that name an entry of its own folder, in page order.

    Parent, sort (`?C=N;O=D`) and absolute links elsewhere, and links into deeper folders,
    are left out; a name linked twice (icon and text) is one entry.
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.entries: dict[str, Entry] = {}
        self.is_overflowing = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a" or self.is_overflowing:
            return
        href = dict(attrs).get("href")
        entry = child_entry(self.url, href) if href else None
        if entry is None or entry.name in self.entries:
            return
        if len(self.entries) >= MAX_ENTRIES:
            self.is_overflowing = True
            return
        self.entries[entry.name] = entry


def child_entry(folder_url: str, href: str) -> Entry | None:
    """The entry `href` names when it is a direct child of `folder_url`, else None."""
    href = href.strip()
    if not href or href.startswith(("?", "#")):
        return None
    try:
        parts = urlsplit(urljoin(folder_url, href))  # resolves "../" and absolute paths
    except ValueError:
        return None
    folder = urlsplit(folder_url)
    if (
        parts.scheme.lower() != folder.scheme.lower()
        or parts.netloc.lower() != folder.netloc.lower()
    ):
        return None  # another host, or another port or scheme of this one
    if parts.query or not parts.path.startswith(folder.path):
        return None
    rest = parts.path[len(folder.path) :]
    is_folder = rest.endswith("/")
    segment = rest[:-1] if is_folder else rest
    name = unquote(segment)  # "%2e%2e" is "..", "%2F" a slash: both refused by is_name
    if "/" in segment or not is_name(name):
        return None
    return Entry(name, urlunsplit(parts._replace(fragment="")), is_folder)


def json_entry(item: object, folder_url: str) -> Entry | None:
    """One entry of nginx's JSON index, None for one that is not a plain file or folder."""
    if not isinstance(item, dict):
        return None
    name, kind = item.get("name"), item.get("type")
    if not isinstance(name, str) or not is_name(name):
        return None
    url = urljoin(folder_url, quote(name, safe=""))
    if kind == "directory":
        return Entry(name, url + "/", is_folder=True)
    if kind != "file":
        return None  # "other": a device, a broken link
    size = item.get("size")
    return Entry(
        name,
        url,
        is_folder=False,
        has_metadata=True,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        modified_at=http_date(item.get("mtime")),
    )


def is_name(name: str) -> bool:
    """Whether `name` is one path segment that stays in its folder."""
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def http_date(value: object) -> datetime | None:
    """An RFC 1123 date ("Wed, 04 Dec 2026 18:58:00 GMT") as an aware UTC datetime."""
    if not isinstance(value, str):
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def bare_etag(value: str | None) -> str | None:
    """An ETag without its quotes (`"abc"` is abc, `W/"abc"` is W/abc)."""
    if not value:
        return None
    weak = value.startswith("W/")
    tag = value[2 if weak else 0 :].strip().strip('"')
    if not tag:
        return None
    return "W/" + tag if weak else tag


def charset(content_type: str) -> str:
    """The charset a Content-Type names, else UTF-8 (not HTTP/1.0's Latin-1: the names in
    today's indexes are UTF-8)."""
    _, found, rest = content_type.partition("charset=")
    name = rest.split(";")[0].strip(" \"'") if found else ""
    try:
        return codecs.lookup(name).name if name else "utf-8"
    except LookupError:
        return "utf-8"


def _at(where: str, reason: str) -> str:
    return f"{where}: {reason}" if where else reason


def open_http(config: HttpSource) -> IndexSource:
    parts = urlsplit(config.url)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    host = parts.netloc.rpartition("@")[2]
    identity = mask_url(urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")))
    session = requests.Session()
    session.headers.update(config.headers)
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL become the session's Basic auth, so that the URLs built
        # from the index's links carry none.
        session.auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    url = urlunsplit((parts.scheme, host, path, parts.query, ""))
    return IndexSource(session, url, identity, config.timeout_seconds)
