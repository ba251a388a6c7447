"""Query parameters of the queue protocol, parsed and checked. Pure: no I/O.

Parameters written `_name_` drive the operation; every other parameter is a tag (put) or a tag filter (get,
watch). A malformed value raises ParameterError naming the parameter and what was expected, which the HTTP layer
answers with 400: the SDK retries every non-2xx answer, so only a real client error may be refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scalablejob.model.errors import ParameterError

MAX_GET_LENGTH = 1000
MAX_WINDOW = 10_000
MAX_WAIT_S = 600.0
MAX_INDEXES = 10_000
MAX_INDEX = 2**63 - 1  # a Redis stream id's first part
# The SDK's default read timeout (5 s) equals its default `_timeout_`: answer a little before the client gives up.
WAIT_MARGIN_S = 0.25

TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
RESERVED = frozenset(
    {
        "_index_", "_length_", "_timeout_", "_raw_", "_auto_delete_", "_attrs_", "_search_", "_watch_",
        "_window_", "_index_only_", "_auto_commit_", "_indexes_", "_trunc_",
    }
)  # fmt: skip


@dataclass(frozen=True)
class GetParams:
    """A read: up to `length` items from `index` on whose tags include `filters`, waiting up to `wait_s`."""

    index: int = 0
    length: int = 1
    wait_s: float = 0.0
    raw: bool = False
    auto_delete: bool = False
    filters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WatchParams:
    """A watch: items from `index` on whose tags include `filters`, at most `window` delivered and not committed
    at once."""

    index: int = 0
    window: int = 1
    index_only: bool = False
    auto_commit: bool = False
    filters: Mapping[str, str] = field(default_factory=dict)


def single_values(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The query string as a dict; a parameter given twice is refused rather than one of its values dropped."""
    values: dict[str, str] = {}
    for name, value in items:
        if name in values:
            raise ParameterError(name, "given more than once: expected it at most once")
        values[name] = value
    return values


def tags_of(query: Mapping[str, str]) -> dict[str, str]:
    """The parameters that are tags: every one that is not an operation parameter."""
    return {name: value for name, value in query.items() if name not in RESERVED}


def parse_bool(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return default
    word = value.lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ParameterError(name, f"expected true or false, got {value!r}")


def parse_int(query: Mapping[str, str], name: str, default: int, *, low: int = 0, high: int = MAX_INDEX) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value, 10)
    except ValueError:
        raise ParameterError(name, f"expected an integer between {low} and {high}, got {value!r}") from None
    if not low <= number <= high:
        raise ParameterError(name, f"expected an integer between {low} and {high}, got {number}")
    return number


def parse_duration(text: str, name: str = "_timeout_") -> float:
    """Seconds in a duration written like Go's: "5s", "1.5s", "300ms", "1m30s"; a bare number is seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = _go_duration(text, name)
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_WAIT_S:
        raise ParameterError(name, f"expected a duration between 0s and {MAX_WAIT_S:g}s, got {text!r}")
    return seconds


def _go_duration(text: str, name: str) -> float:
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ParameterError(name, f'expected a duration such as "5s", "500ms" or "1m30s", got {text!r}')
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def parse_indexes(value: str | None, name: str = "_indexes_") -> tuple[int, ...]:
    """A comma-separated list of item indexes, as commit and delete take them."""
    if not value:
        raise ParameterError(name, "required: expected a comma-separated list of indexes, such as 1,2,3")
    words = [word.strip() for word in value.split(",")]
    if len(words) > MAX_INDEXES:
        raise ParameterError(name, f"expected at most {MAX_INDEXES} indexes, got {len(words)}")
    if "" in words:
        raise ParameterError(name, f"expected a comma-separated list of indexes, such as 1,2,3, got {value!r}")
    return tuple(parse_int({name: word}, name, 0, low=1) for word in words)


def parse_get(query: Mapping[str, str]) -> GetParams:
    """A get's parameters; the wait ends WAIT_MARGIN_S before the client's deadline, so its answer is not lost."""
    timeout = query.get("_timeout_")
    wait_s = parse_duration(timeout) if timeout else 0.0
    return GetParams(
        index=parse_int(query, "_index_", 0),
        length=parse_int(query, "_length_", 1, low=1, high=MAX_GET_LENGTH),
        wait_s=max(0.0, wait_s - WAIT_MARGIN_S) if wait_s > 2 * WAIT_MARGIN_S else wait_s,
        raw=parse_bool(query, "_raw_"),
        auto_delete=parse_bool(query, "_auto_delete_"),
        filters=tags_of(query),
    )


def parse_watch(query: Mapping[str, str]) -> WatchParams:
    """A watch's parameters; every parameter that is not an operation parameter is a tag filter."""
    return WatchParams(
        index=parse_int(query, "_index_", 0),
        window=parse_int(query, "_window_", 1, low=1, high=MAX_WINDOW),
        index_only=parse_bool(query, "_index_only_"),
        auto_commit=parse_bool(query, "_auto_commit_"),
        filters=tags_of(query),
    )


def parse_truncate(query: Mapping[str, str]) -> int:
    """The index below which a truncate deletes every item."""
    if not query.get("_index_"):
        raise ParameterError("_index_", "required with _trunc_=true: expected the index below which items are deleted")
    return parse_int(query, "_index_", 0, low=1)
