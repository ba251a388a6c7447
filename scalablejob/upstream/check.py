"""The one check every module that relies on another project's internals makes at import: each private name it
uses is there in the installed release, else one clear error naming the project, its version and the versions this
scalablejob was built for. A rename upstream then stops the process at start, never falls back in silence to
slower or wrong behaviour."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from importlib import metadata

from scalablejob.model.errors import ScalableJobError


class UpstreamChanged(ScalableJobError):
    """An installed release of a project scalablejob builds on lacks something scalablejob relies on."""


def require(project: str, owner: object, names: Iterable[str]) -> None:
    """Raise UpstreamChanged unless `owner` (a class or module of `project`) has every name in `names`."""
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        raise UpstreamChanged(
            f"{project} {installed_version(project)} has no {', '.join(missing)} on {_qualified(owner)}, which "
            f"scalablejob relies on; this scalablejob supports {project} {supported_versions(project)}: install "
            f"one of those (pip install '{project}{supported_versions(project)}')"
        )


def require_equal(project: str, what: str, theirs: object, ours: object) -> None:
    """Raise UpstreamChanged unless a value of `project` that scalablejob also writes by hand (a key name, a
    separator) is still the one scalablejob writes."""
    if theirs != ours:
        raise UpstreamChanged(
            f"{project} {installed_version(project)} uses {theirs!r} as {what}, where scalablejob writes {ours!r}; "
            f"this scalablejob supports {project} {supported_versions(project)}"
        )


def installed_version(project: str) -> str:
    try:
        return metadata.version(project)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


@cache
def supported_versions(project: str) -> str:
    """The version range of `project` in scalablejob's own requirements, e.g. '>=5.6,<5.8'."""
    try:
        requirements = metadata.requires("scalablejob") or []
    except metadata.PackageNotFoundError:
        return "(see setup.cfg)"
    for requirement in requirements:
        found = re.match(rf"{re.escape(project)}(\[[^\]]*\])?\s*\(?([^;)]*)", requirement, re.IGNORECASE)
        if found and found.group(2).strip():
            return found.group(2).strip().replace(" ", "")
    return "(any version)"


def _qualified(owner: object) -> str:
    module = getattr(owner, "__module__", None)
    name = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", repr(owner))
    return f"{module}.{name}" if module and isinstance(owner, type) else str(name)
