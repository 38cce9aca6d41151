"""Pydantic models of a job's chain: entries (integration, http, function) and conditions.

They only describe and validate; running them is poller.run.chain's and poller.run.steps' work.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from typing_extensions import TypeAliasType

from poller.config.base import Model
from poller.config.constraints import HTTP_URL_PATTERN, text_matching
from poller.config.sources import SourceConfig
from poller.redaction import is_secret_name, is_secret_parameter, mask_url

MAX_RESPONSE_BYTES = 10 * 1024 * 1024
"""A response body (decoded) larger than this fails its call (`max_response_bytes`)."""
FUNCTION_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


# --- conditions -----------------------------------------------------------------------

OPERATORS = (
    "equals",
    "not_equals",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "exists",
    "contains",
    "matches",
)

OPERATOR_WORDS = {
    **{word: "gt" for word in ("greater", "greater_than", "more_than", "above", "over", ">")},
    **{word: "gte" for word in ("ge", "greater_or_equal", "at_least", "min", ">=")},
    **{word: "lt" for word in ("less", "less_than", "fewer_than", "below", "under", "<")},
    **{word: "lte" for word in ("le", "less_or_equal", "at_most", "max", "<=")},
    **{word: "equals" for word in ("eq", "equal", "is", "==", "=")},
    **{word: "not_equals" for word in ("ne", "neq", "not_equal", "is_not", "!=")},
    **{word: "in" for word in ("one_of", "any_of", "within")},
    **{word: "not_in" for word in ("not_one_of", "none_of")},
    **{word: "contains" for word in ("has", "includes", "include")},
    **{word: "matches" for word in ("match", "regex", "regexp", "pattern")},
    **{word: "exists" for word in ("exist", "present", "defined")},
}
"""Words people write for an operator, for the "did you mean" of an unknown one."""


def operator_for(word: str) -> str | None:
    """The operator an unknown condition key most likely means, or None."""
    key = word.strip().lower().replace("-", "_").replace(" ", "_")
    if key in OPERATORS:
        return key
    if key in OPERATOR_WORDS:
        return OPERATOR_WORDS[key]
    close = difflib.get_close_matches(key, [*OPERATORS, *OPERATOR_WORDS], n=1, cutoff=0.75)
    return (OPERATOR_WORDS.get(close[0], close[0])) if close else None


class Condition(Model):
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": [op]} for op in OPERATORS]})

    token: str = Field(description='Dotted path into the previous output, e.g. "data.count".')
    equals: Any = None
    not_equals: Any = None
    gt: Any = None
    gte: Any = None
    lt: Any = None
    lte: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    exists: bool | None = None
    contains: Any = None
    matches: str | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [
            op for op in OPERATORS if (op + "_" if op == "in" else op) in self.model_fields_set
        ]
        if len(given) != 1:
            raise ValueError("expected exactly one operator of " + ", ".join(OPERATORS))
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as err:
                raise ValueError(f"matches: not a regular expression ({err})") from None
        return self

    @property
    def operator(self) -> str:
        return next(
            op for op in OPERATORS if (op + "_" if op == "in" else op) in self.model_fields_set
        )

    @property
    def operand(self) -> Any:
        return getattr(self, "in_" if self.operator == "in" else self.operator)


def _cond_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "all"
    if isinstance(value, dict):
        return "any" if "any" in value else "one"
    if isinstance(value, Condition):
        return "one"
    if isinstance(value, AnyOf):
        return "any"
    return None


Cond = TypeAliasType(  # type: ignore[misc]
    "Cond",
    Annotated[
        Annotated[Condition, Tag("one")]
        | Annotated["AnyOf", Tag("any")]
        | Annotated[list["Cond"], Tag("all")],  # type: ignore[misc]
        Discriminator(
            _cond_kind,
            custom_error_type="condition",
            custom_error_message='expected a condition {"token": ..., "<operator>": ...}, '
            'a list of them, or {"any": [...]}',
        ),
    ],
)


class AnyOf(Model):
    any: list[Cond] = Field(min_length=1)


# --- the chain ------------------------------------------------------------------------


class IntegrationEntry(Model):
    id: str = Field(min_length=1, description="Integration ID on the platform.")
    when: Cond | None = None
    input: dict[str, Any] = Field(default_factory=dict, description="Merged over the input.")
    continue_on_error: bool = False


class HttpCall(Model):
    method: str = "GET"
    url: str = Field(json_schema_extra=text_matching(HTTP_URL_PATTERN))
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    json_: Any = Field(None, alias="json")
    timeout_seconds: float = Field(30, gt=0)
    max_response_bytes: int = Field(
        MAX_RESPONSE_BYTES, ge=1, description="Cap of the response body's decoded size."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(HTTP_URL_PATTERN, value):
            raise ValueError("expected an http:// or https:// URL")
        return value

    def secret_values(self) -> list[str]:
        """Values of secret-named headers and query parameters, and the URL's password."""
        parts = urlsplit(self.url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        return [
            *(v for k, v in self.headers.items() if is_secret_name(k) or is_secret_parameter(k)),
            *(str(v) for k, v in self.params.items() if is_secret_parameter(k) and v is not None),
            *(v for k, v in query if is_secret_parameter(k)),
            parts.password or "",
        ]


class HttpEntry(Model):
    http: HttpCall
    when: Cond | None = None
    continue_on_error: bool = False


class FunctionEntry(Model):
    function: str = Field(
        description='"module:callable", importable from the config folder.',
        json_schema_extra=text_matching(FUNCTION_RE.pattern),
    )
    when: Cond | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    continue_on_error: bool = False

    @field_validator("function")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not FUNCTION_RE.fullmatch(value):
            raise ValueError('expected "module:callable", e.g. "tasks:summarise"')
        return value


class FilesCall(Model):
    source_config: SourceConfig
    file_pattern: str = Field(
        "*", min_length=1, description='A glob over paths: "*.csv", "**/*.csv" (any depth).'
    )
    emit: Literal["new", "all"] = Field(
        "new", description='"new": files new or changed since the last successful run; "all".'
    )


class FilesEntry(Model):
    """Lists a source (SPEC §10): its output is the files, as a worker's events."""

    files: FilesCall
    when: Cond | None = None
    continue_on_error: bool = False


class KafkaCall(Model):
    topic: str = Field(min_length=1, description="Where the entry's input is published.")
    key: str | None = Field(
        None, description='Dotted path in the input whose value keys the message ("job_id").'
    )


class KafkaEntry(Model):
    """Publishes its input as one JSON message (SPEC §10), on settings.kafka's broker."""

    kafka: KafkaCall
    when: Cond | None = None
    continue_on_error: bool = False


def _entry_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "id"
    if isinstance(value, dict):
        for key in ("http", "function", "files", "kafka"):
            if key in value:
                return key
        return "each" if "for_each" in value else "integration"
    for kind, cls in (("integration", IntegrationEntry), ("http", HttpEntry)):
        if isinstance(value, cls):
            return kind
    if isinstance(value, FunctionEntry):
        return "function"
    if isinstance(value, FilesEntry):
        return "files"
    if isinstance(value, KafkaEntry):
        return "kafka"
    if isinstance(value, ForEachEntry):
        return "each"  # not "for_each": a tag named as a key would look like a place in it
    return None


_ENTRY_MESSAGE = (
    'expected an integration ID string or an object with "id", "http", "function", "files", '
    '"kafka" or "for_each"'
)
SubEntry = Annotated[
    Annotated[IntegrationEntry, Tag("integration")]
    | Annotated[HttpEntry, Tag("http")]
    | Annotated[FunctionEntry, Tag("function")]
    | Annotated[FilesEntry, Tag("files")]
    | Annotated[KafkaEntry, Tag("kafka")]
    | Annotated[Annotated[str, Field(min_length=1)], Tag("id")],
    Discriminator(
        _entry_kind,
        custom_error_type="entry",
        custom_error_message=_ENTRY_MESSAGE.replace(' or "for_each"', "")
        + " (a for_each cannot hold another)",
    ),
]
"""An entry of a for_each's sub-chain: any entry but another for_each."""


class ForEachEntry(Model):
    """Runs its sub-chain once per item of a list in the previous output (SPEC §9)."""

    for_each: str = Field(
        min_length=1, description='Dotted path of the list in the previous output, e.g. "sources".'
    )
    steps: list[Annotated[list[SubEntry], Field(min_length=1)]] = Field(
        min_length=1, description="The sub-chain each item runs; the item is its input."
    )
    max_parallel: int = Field(4, ge=1, le=256, description="Items run at once.")
    when: Cond | None = Field(None, description="Tested against each item; filters the list.")
    key: str | None = Field(
        None, description='Dotted path in an item naming it in logs and results (e.g. "name").'
    )
    continue_on_error: bool = Field(
        False, description="Go on with the chain even when every item failed."
    )


Entry = Annotated[
    Annotated[IntegrationEntry, Tag("integration")]
    | Annotated[HttpEntry, Tag("http")]
    | Annotated[FunctionEntry, Tag("function")]
    | Annotated[FilesEntry, Tag("files")]
    | Annotated[KafkaEntry, Tag("kafka")]
    | Annotated[ForEachEntry, Tag("each")]
    | Annotated[Annotated[str, Field(min_length=1)], Tag("id")],
    Discriminator(
        _entry_kind,
        custom_error_type="entry",
        custom_error_message=_ENTRY_MESSAGE,
    ),
]


def leaf_entries(
    steps: list[list[Any]],
) -> Iterator[IntegrationEntry | HttpEntry | FunctionEntry | FilesEntry | KafkaEntry | str]:
    """Every entry that makes a call or runs a function, in order: a for_each's sub-chain
    entries in its place."""
    for step in steps:
        for entry in step:
            if isinstance(entry, ForEachEntry):
                yield from leaf_entries(entry.steps)
            else:
                yield entry


def entry_id(
    entry: IntegrationEntry
    | HttpEntry
    | FunctionEntry
    | FilesEntry
    | KafkaEntry
    | ForEachEntry
    | str,
) -> str:
    """The id a step record shows for a chain entry."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, ForEachEntry):
        return f"for_each:{entry.for_each}"
    if isinstance(entry, IntegrationEntry):
        return entry.id
    if isinstance(entry, HttpEntry):
        return f"http:{entry.http.method.upper()} {mask_url(entry.http.url.split('?')[0])}"
    if isinstance(entry, FilesEntry):
        return f"files:{entry.files.source_config.source_type} {entry.files.file_pattern}"
    if isinstance(entry, KafkaEntry):
        return f"kafka:{entry.kafka.topic}"
    return f"function:{entry.function}"


def calls_at_once(steps: list[list[Any]]) -> int:
    """How many calls a run of this chain may make at once: the largest max_parallel of
    its for_each entries (1 without any)."""
    return max(
        (entry.max_parallel for step in steps for entry in step if isinstance(entry, ForEachEntry)),
        default=1,
    )
