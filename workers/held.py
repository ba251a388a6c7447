"""The tasks a worker holds, from Celery's signals: one from the moment it is received (in the consumer
thread, before the next fetch) until it ran or was revoked. The idle-first gate and the presence report
both follow this, so it is wired in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import signals

from scalablejob.model.routing import TASK_TYPE_ATTRIBUTE, TaskType, task_type_of


def request_task_type(request: Any) -> TaskType | None:
    """The type of work a received task is: its Celery task says (named tasks too), else its generic name does."""
    declared = getattr(getattr(request, "task", None), TASK_TYPE_ATTRIBUTE, None)
    return declared if isinstance(declared, TaskType) else task_type_of(str(getattr(request, "name", "")))


OnReceived = Callable[[Any, TaskType], None]
OnDone = Callable[[str], None]
_trackers: list[tuple[OnReceived, OnDone]] = []  # one receiver per signal calls them all: a dispatch costs per receiver


def track_held_tasks(on_received: OnReceived, on_done: OnDone) -> None:
    """Call `on_received(request, task_type)` for each of our tasks a worker receives, `on_done(task_id)` at its end."""
    if not _trackers:
        signals.task_received.connect(_received, weak=False)
        signals.task_postrun.connect(_postrun, weak=False)
        signals.task_revoked.connect(_revoked, weak=False)
    _trackers.append((on_received, on_done))


def _received(request: Any = None, **_: Any) -> None:
    task_type = None if request is None else request_task_type(request)
    if task_type is not None:
        for on_received, _on_done in _trackers:
            on_received(request, task_type)


def _postrun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        for _on_received, on_done in _trackers:
            on_done(task_id)


def _revoked(request: Any = None, **_: Any) -> None:
    if request is not None:
        for _on_received, on_done in _trackers:
            on_done(request.id)
