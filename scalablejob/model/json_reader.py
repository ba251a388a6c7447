"""Reading one JSON object field by field, with the JSON path of each field, for error messages that name it.

`JsonObject` remembers the keys it was asked for, so `done()` can reject every other key: a typo in a config
must not pass silently as a default. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import TypeVar

from scalablejob.model.errors import ConfigError

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_D = TypeVar("_D")
_MISSING = object()
_SCALAR_KINDS: dict[type, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


class JsonObject:
    """A JSON object being read; it remembers the keys asked for, so that `done` can reject every other key."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected an object, got {found(data)}")
        self._data: dict[str, object] = data
        self._asked: list[str] = []
        self.path = path

    def at(self, key: str) -> str:
        """The JSON path of one of this object's keys; keys that are not identifiers go in brackets."""
        return f"{self.path}.{key}" if _IDENT_RE.fullmatch(key) else f"{self.path}[{json.dumps(key)}]"

    def raw(self, key: str, default: object = _MISSING) -> object:
        """The value as decoded, or `default` when the key is absent."""
        self._asked.append(key)
        return self._data.get(key, default)

    def integer(self, key: str, default: _D, *, ge: int | None = None, le: int | None = None) -> int | _D:
        value = self.raw(key)
        if value is _MISSING:
            return default
        expected = _range_expected("an integer", ge=ge, le=le)
        if not isinstance(value, int) or isinstance(value, bool):  # JSON true must not pass as 1
            raise ConfigError(self.at(key), f"expected {expected}, got {found(value)}")
        if (ge is not None and value < ge) or (le is not None and value > le):
            raise ConfigError(self.at(key), f"expected {expected}, got {value}")
        return value

    def number(self, key: str, default: _D, *, ge: float | None = None, gt: float | None = None) -> float | _D:
        value = self.raw(key)
        if value is _MISSING:
            return default
        expected = _range_expected("a number", ge=ge, gt=gt)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(self.at(key), f"expected {expected}, got {found(value)}")
        if not math.isfinite(value) or (ge is not None and value < ge) or (gt is not None and value <= gt):
            raise ConfigError(self.at(key), f"expected {expected}, got {value}")
        return float(value)

    def string(
        self, key: str, default: _D, *, nonempty: bool = True, choices: tuple[str, ...] | None = None
    ) -> str | _D:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or (nonempty and not value) or (choices is not None and value not in choices):
            raise ConfigError(self.at(key), f"expected {_string_expected(nonempty, choices)}, got {found(value)}")
        return value

    def required_string(self, key: str, *, nonempty: bool = True, choices: tuple[str, ...] | None = None) -> str:
        value = self.string(key, None, nonempty=nonempty, choices=choices)
        if value is None:
            raise ConfigError(self.at(key), f"required, expected {_string_expected(nonempty, choices)}")
        return value

    def boolean(self, key: str, default: _D) -> bool | _D:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.at(key), f"expected a boolean (true or false), got {found(value)}")
        return value

    def optional_section(self, key: str) -> JsonObject | None:
        """A nested object, or None when the key is absent."""
        value = self.raw(key)
        return None if value is _MISSING else JsonObject(value, self.at(key))

    def section(self, key: str) -> JsonObject:
        """A nested object; an absent key reads as an empty one, so every field takes its default."""
        return JsonObject(self.raw(key, {}), self.at(key))

    def required_section(self, key: str) -> JsonObject:
        section = self.optional_section(key)
        if section is None:
            raise ConfigError(self.at(key), "required, expected an object")
        return section

    def items(self, key: str) -> list[tuple[str, object]]:
        """A list's items with their paths; an absent key reads as an empty list."""
        value = self.raw(key, [])
        if not isinstance(value, list):
            raise ConfigError(self.at(key), f"expected a list, got {found(value)}")
        return [(f"{self.at(key)}[{i}]", item) for i, item in enumerate(value)]

    def done(self) -> None:
        """Reject any key that was not asked for: a typo must not pass silently as a default."""
        for key in self._data:
            if key not in self._asked:
                allowed = ", ".join(self._asked) or "none"
                raise ConfigError(self.at(key), f"unknown key {key!r} (allowed: {allowed})")


def _range_expected(kind: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None) -> str:
    if ge is not None and le is not None:
        return f"{kind} between {ge:g} and {le:g}"
    bounds = [f"{op} {bound:g}" for op, bound in ((">=", ge), (">", gt), ("<=", le)) if bound is not None]
    return " ".join([kind, *bounds])


def _string_expected(nonempty: bool, choices: tuple[str, ...] | None) -> str:
    if choices is not None:
        return "one of " + ", ".join(json.dumps(choice) for choice in choices)
    return "a non-empty string" if nonempty else "a string"


def found(value: object) -> str:
    """How a found value reads in a message: objects and lists by kind, scalars by kind and JSON text."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "list"
    if value is None:
        return "null"
    kind = _SCALAR_KINDS.get(type(value))
    return repr(value) if kind is None else f"{kind} {json.dumps(value)}"
