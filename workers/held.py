"""The tasks a worker holds, from Celery's signals: one from the moment it is received (in the consumer
thread, before the next fetch) until it ran or was revoked. The idle-first gate and the presence report
both follow this, so it is wired in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import signals

from scalablejob.routing import TaskType, task_type_of


def track_held_tasks(on_received: Callable[[Any, TaskType], None], on_done: Callable[[str], None]) -> None:
    """Call `on_received(request, task_type)` for each of our tasks a worker receives, `on_done(task_id)` at its end."""

    def received(request: Any = None, **_: Any) -> None:
        task_type = None if request is None else task_type_of(request.name)
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
