"""The one place secrets are recognised and masked, for every output Poller has.

Three rules, applied by `Redactor` to logs, run records (stored and returned), the API, the
page, `history`, `app.py run` and config errors:
- by key name: a JSON key whose last word names a credential (`Authorization`, `Cookie`,
  `X-Platform-Token`, `api_key`, `client_secret`, ...) has its value masked, whatever it is;
  whole words, so `author` and `sort_key` are kept (`is_secret_name`);
- by value: every configured secret and every value derived from one at run time (a Basic
  header's base64, a bearer token, a session cookie) is masked wherever it appears;
- in URLs: userinfo is always masked, and so are the values of query parameters whose
  names look secret (`?token=`, `&sig=`, `api_key=`), in URLs and in free text alike.
It only masks: it never reads the config or the network, so it can sit under every module.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

MASK = "**********"
MIN_SECRET_CHARS = 3
"""Shorter configured values are not masked by value: masking "ab" everywhere would mangle
every output, and such a value is no secret anyway."""
MAX_DERIVED = 10_000
"""Run-time secrets kept (tokens, cookies): the newest, so a long-lived daemon stays small."""

# Words (of a key split at punctuation and camelCase) that name a credential when a key
# ends in them, and the word pairs that do (`api_key`, but not `sort_key`).
_SECRET_WORDS = frozenset(
    {
        "authorization",
        "apikey",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "passphrase",
        "passwd",
        "password",
        "pwd",
        "secret",
        "signature",
        "token",
    }
)
_SECRET_SUFFIXES = ("apikey", "cookie", "password", "secret", "token")  # accesstoken, xapikey
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("session", "id")}
)
# Query parameter names are judged more broadly: any word, and these short ones too.
_QUERY_WORDS = _SECRET_WORDS | {"auth", "code", "key", "session", "sid", "sig"}
_WORD_RE = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_QUERY_PAIR_RE = re.compile(r"([?&;])([^=&;#\s'\"]+)=([^&;#\s'\"]*)")


def _words(name: str) -> list[str]:
    return [word.lower() for word in _WORD_RE.findall(name)]


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a JSON key or header name names a credential (its last word, or last two)."""
    words = _words(name)
    if not words:
        return False
    last = words[-1]
    if last in _SECRET_WORDS or last.endswith(_SECRET_SUFFIXES):
        return True
    return len(words) > 1 and (words[-2], last) in _SECRET_PAIRS


@functools.lru_cache(maxsize=4096)
def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter's value should be masked (`token`, `sig`, `api_key`, ...)."""
    return any(word in _QUERY_WORDS or word.endswith(_SECRET_SUFFIXES) for word in _words(name))


def _mask_pair(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    return f"{sep}{name}={MASK}" if value and is_secret_parameter(name) else match.group(0)


def mask_url(url: str) -> str:
    """`url` with its userinfo and its secret-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _QUERY_PAIR_RE.sub(_mask_pair, url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    query = _QUERY_PAIR_RE.sub(_mask_pair, "?" + parts.query)[1:] if parts.query else ""
    if netloc == parts.netloc and query == parts.query:
        return url
    # Put together by hand: urlunsplit drops the empty host of "local:///path?token=…".
    head = f"{parts.scheme}:" if parts.scheme else ""
    if url[len(head) :].startswith("//"):
        head += "//" + netloc
    tail = ("?" + query if parts.query else "") + ("#" + parts.fragment if parts.fragment else "")
    return head + parts.path + tail


def mask_text(text: str) -> str:
    """Free text with the URLs in it masked (`mask_url`), and bare `?token=…` pairs too."""
    if "://" in text:
        text = _URL_RE.sub(lambda match: mask_url(match.group(0)), text)
    if "=" in text:
        text = _QUERY_PAIR_RE.sub(_mask_pair, text)
    return text


PLACEHOLDER = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
"""A `${NAME}` and nothing else: a reference to a secret, not one."""


def _is_hidden(key: object, item: Any, keep_placeholders: bool) -> bool:
    """Whether a JSON member is masked whole for its secret-sounding name."""
    if item is None or not isinstance(key, str) or not is_secret_name(key):
        return False
    return not (keep_placeholders and isinstance(item, str) and PLACEHOLDER.fullmatch(item))


class Redactor:
    """Masks secrets in text and JSON-like values; safe to share between threads.

    `configure` sets the configured secrets (again after each reload); `add` learns values
    derived at run time, which are kept until MAX_DERIVED newer ones have come.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._configured: frozenset[str] = frozenset()
        self._derived: OrderedDict[str, None] = OrderedDict()
        self._pattern: re.Pattern[str] | None = None
        self.configure(secrets)

    def configure(self, secrets: Iterable[str]) -> None:
        """Replace the configured secrets (the derived ones are kept)."""
        with self._lock:
            self._configured = frozenset(s for s in secrets if len(s) >= MIN_SECRET_CHARS)
            self._compile()

    def add(self, *secrets: str) -> None:
        """Learn secrets obtained at run time (a token, a cookie value)."""
        fresh = [s for s in secrets if len(s) >= MIN_SECRET_CHARS and s not in self._derived]
        if not fresh:
            return
        with self._lock:
            for secret in fresh:
                self._derived[secret] = None
            while len(self._derived) > MAX_DERIVED:
                self._derived.popitem(last=False)
            self._compile()

    def _compile(self) -> None:
        # Longest first, so a secret containing another is masked whole.
        values = sorted(self._configured | self._derived.keys(), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def text(self, text: str) -> str:
        """`text` with every known secret value and every URL credential masked."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        return mask_text(text)

    def value(self, value: Any, *, keep_placeholders: bool = False) -> Any:
        """A copy of a JSON-like value with secrets masked: by key name, by value, in URLs.

        With `keep_placeholders`, a string that is only a `${NAME}` stays, even under a
        secret name: it holds no secret, only where its reader is to find one (a polling
        job for a worker's environment)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                key: MASK
                if _is_hidden(key, item, keep_placeholders)
                else self.value(item, keep_placeholders=keep_placeholders)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item, keep_placeholders=keep_placeholders) for item in value]
        return value
