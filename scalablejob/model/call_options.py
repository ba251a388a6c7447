"""Which Celery calls a service refuses before sending anything, and why: a call that no worker of the service could
run as asked would otherwise wait PENDING forever, or run without what it asked for. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scalablejob.model.routing import TaskType, queue_for


def refused_call(
    name: str, task_type: TaskType | None, known: Sequence[str], options: Mapping[str, Any], service: str
) -> str | None:  # fmt: skip
    """Why a call of task `name` (its type; None: this process does not know it) with apply_async `options` is
    refused, in one sentence; None when it may be sent. `known`: the tasks the service's workers registered (empty:
    none has started yet, and a name is taken as given: a worker that does not know it fails the call)."""
    if task_type is None and known and not name.startswith("celery."):
        return f"unknown task {name!r} for service {service}: expected one of {', '.join(known)}"
    expected = queue_for(service, task_type or TaskType.QUERY)
    for option in ("queue", "routing_key"):
        value = _queue_name(options.get(option))
        if value is not None and value != expected:
            return (
                f"{option} {value!r}: task {name} runs on its type's queue {expected}, which the service's workers "
                f"consume; expected no {option}"
            )
    return None


def refused_options(name: str, options: Mapping[str, Any]) -> str | None:
    """Why a task's own options are refused when it is declared (the same reasons as a call's); None when they are
    fine."""
    for option in ("queue", "routing_key"):
        if options.get(option) is not None:
            return f"{option} {options[option]!r}: task {name} runs on its type's queue; expected no {option}"
    return None


def _queue_name(value: Any) -> str | None:
    """A queue option as a name: kombu's Queue object or a string."""
    if value is None:
        return None
    return str(getattr(value, "name", value))
