"""Routing by taskType and task name: which Celery queue and task a request goes to. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from scalablejob.model.errors import RequestError, TaskTypeError

TASK_TYPE_TAG = "taskType"
TASK_TAG = "task"  # picks one of a service's named tasks (@job.task) by its name
TASK_TYPE_ATTRIBUTE = "scalablejob_task_type"  # set on each Celery task of a service: its TaskType


class TaskType(str, Enum):
    """The two kinds of work that flow through one service."""

    COMMAND = "command"
    QUERY = "query"


ALLOWED_TASK_TYPES: tuple[str, ...] = tuple(t.value for t in TaskType)

_TASK_NAMES = {TaskType.COMMAND: "scalablejob.command", TaskType.QUERY: "scalablejob.query"}


def parse_task_type(value: str | None, default: str | None = None) -> TaskType:
    """The TaskType named by a request's tag, else the service default; an error names the allowed values."""
    chosen = value if value not in (None, "") else default
    if chosen is None:
        raise TaskTypeError(f"taskType is required: expected one of {', '.join(ALLOWED_TASK_TYPES)}")
    try:
        return TaskType(chosen)
    except ValueError:
        raise TaskTypeError(
            f"taskType {chosen!r} is not allowed: expected one of {', '.join(ALLOWED_TASK_TYPES)}"
        ) from None


def queue_for(service: str, task_type: TaskType) -> str:
    """The Celery queue that carries a service's tasks of one type, e.g. ``demo.query``."""
    return f"{service}.{task_type.value}"


def task_name_for(task_type: TaskType) -> str:
    """The registered Celery task name that runs one type of work."""
    return _TASK_NAMES[task_type]


def task_type_of(task_name: str) -> TaskType | None:
    """The TaskType a registered task name runs, or None for tasks that are not ours."""
    for task_type, name in _TASK_NAMES.items():
        if name == task_name:
            return task_type
    return None


@dataclass(frozen=True)
class TaskInfo:
    """A named task as the service's task registry records it: its type, and whether it answers untagged queries."""

    task_type: TaskType
    default: bool = False


TaskRegistry = Mapping[str, TaskInfo]


def resolve_task(
    tags: Mapping[str, str], registry: TaskRegistry, default_task_type: str | None, service: str
) -> tuple[TaskType, str | None]:
    """The task type and named task a request goes to; None for the name means the generic task of that type (a
    command line, or the query handler / model server of a service without named query tasks).

    A `task` tag must name a registered task, and a `taskType` tag must agree with it. Without one, a query goes to
    the task marked default (@job.query), else to the service's only query task; a command is a command line. An
    empty registry (no worker of the service has started yet) cannot tell a name from a typo: the name is taken as
    given, with the type of its tags, and a worker that does not know it fails the request.
    """
    name = tags.get(TASK_TAG) or None
    if name is None or not registry:
        task_type = parse_task_type(tags.get(TASK_TYPE_TAG), default_task_type)
        return task_type, name or _untagged_task(task_type, registry, service)
    info = registry.get(name)
    if info is None:
        raise RequestError(f"unknown task {name!r} for service {service}: expected one of {_known(registry)}")
    given = tags.get(TASK_TYPE_TAG) or None
    if given is not None and given != info.task_type.value:
        raise TaskTypeError(
            f"task {name!r} is a {info.task_type.value} task: expected taskType {info.task_type.value} "
            f"or no taskType tag, got {given!r}"
        )
    return info.task_type, name


def _untagged_task(task_type: TaskType, registry: TaskRegistry, service: str) -> str | None:
    if task_type is not TaskType.QUERY:
        return None
    defaults = sorted(name for name, info in registry.items() if info.task_type is task_type and info.default)
    queries = sorted(name for name, info in registry.items() if info.task_type is task_type)
    if len(defaults) == 1:
        return defaults[0]
    if len(queries) <= 1:
        return queries[0] if queries else None
    raise RequestError(
        f"service {service} has several query tasks ({', '.join(queries)}) and none is the default: "
        f"expected a tag {TASK_TAG}=NAME"
    )


def _known(registry: TaskRegistry) -> str:
    return ", ".join(sorted(registry))


def service_queues(service: str) -> list[str]:
    """The Celery queues a service's workers consume, command first."""
    return [queue_for(service, task_type) for task_type in TaskType]
