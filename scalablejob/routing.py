"""Routing by taskType: which Celery queue and task a request goes to. Pure; no I/O."""

from __future__ import annotations

from enum import Enum

from scalablejob.errors import TaskTypeError

TASK_TYPE_TAG = "taskType"


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
