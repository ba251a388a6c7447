"""The tasks a worker holds, from Celery's signals: one from the moment it is received (in the consumer
thread, before the next fetch) until it ran or was revoked. The idle-first gate and the presence report
both follow this, so it is wired in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import signals

from scalablejob.routing import TaskType, task_type_of

TASK_TYPE_ATTRIBUTE = "scalablejob_task_type"  # set on each of our Celery tasks, named ones included


def request_task_type(request: Any) -> TaskType | None:
    """The type of work a received task is: its Celery task says (named tasks too), else its generic name does."""
    declared = getattr(getattr(request, "task", None), TASK_TYPE_ATTRIBUTE, None)
    return declared if isinstance(declared, TaskType) else task_type_of(str(getattr(request, "name", "")))


def track_held_tasks(on_received: Callable[[Any, TaskType], None], on_done: Callable[[str], None]) -> None:
    """Call `on_received(request, task_type)` for each of our tasks a worker receives, `on_done(task_id)` at its end."""

    def received(request: Any = None, **_: Any) -> None:
        task_type = None if request is None else request_task_type(request)
        if task_type is not None:
            on_received(request, task_type)

    def postrun(task_id: str | None = None, **_: Any) -> None:
        if task_id:
            on_done(task_id)

    def revoked(request: Any = None, **_: Any) -> None:
        if request is not None:
            on_done(request.id)

    signals.task_received.connect(received, weak=False)
    signals.task_postrun.connect(postrun, weak=False)
    signals.task_revoked.connect(revoked, weak=False)
