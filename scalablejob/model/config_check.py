"""Every error of a service JSON, not only the first: what `scalablejob config check` reports.

The parser stops at the first error. To find the next one, the offending field is taken out of a copy of the
document (so it takes its default) and the copy is parsed again, until it parses or nothing more can be taken
out. A required field that is missing gets a stand-in value instead, so the fields after it are checked too.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from scalablejob.model.config import ServiceConfig, parse_config
from scalablejob.model.errors import ConfigError

MAX_ERRORS = 100
_STAND_INS: dict[str, Any] = {"$.metadata": {}, "$.metadata.name": "stand-in", "$.metadata.type": "ScalableJob"}
_STEP = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[("(?:[^"\\]|\\.)*")\]|\[(\d+)\]')


def path_steps(path: str) -> list[str | int]:
    """`$.a["b.c"][0]` as ["a", "b.c", 0]: the keys and indexes of a ConfigError's path."""
    steps: list[str | int] = []
    rest = path[1:] if path.startswith("$") else path
    while rest:
        match = _STEP.match(rest)
        if match is None:
            raise ValueError(f"not a JSON path: {path!r}")
        name, quoted, index = match.groups()
        steps.append(name if name is not None else json.loads(quoted) if quoted is not None else int(index))
        rest = rest[match.end() :]
    return steps


def _remove_or_stand_in(document: Any, error: ConfigError) -> bool:
    """Take the offending field out (or give a missing required one a stand-in); False if nothing changed."""
    steps = path_steps(error.path)
    if not steps:
        return False
    parent = document
    for step in steps[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return False
    last = steps[-1]
    if isinstance(parent, dict) and error.path in _STAND_INS:  # required: a valid stand-in, not a gap
        if parent.get(last) == _STAND_INS[error.path]:
            return False
        parent[last] = copy.deepcopy(_STAND_INS[error.path])
        return True
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        parent[last] = {}
        return True
    return False


def all_config_errors(data: Any) -> tuple[ServiceConfig | None, list[ConfigError]]:
    """The parsed config when there is no error, and every error found (in document order of discovery)."""
    document = copy.deepcopy(data)
    errors: list[ConfigError] = []
    while len(errors) < MAX_ERRORS:
        try:
            parsed = parse_config(document)
        except ConfigError as error:
            errors.append(error)
            if not _remove_or_stand_in(document, error):
                break
        else:
            return (parsed if not errors else None), errors
    return None, errors
