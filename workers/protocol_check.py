"""A message this worker cannot run goes back on its queue for another worker, never to a failure.

Before a task runs, its message's protocol version (scalablejob.model.protocol) and its arguments are checked: a
version this release does not run, or arguments its task does not take (sent by a newer producer: a worker before
versions failed such a task with a TypeError), make the task reject its message with requeue. kombu then pushes it
at the far end of its queue, behind the messages waiting there, without touching the request's state, and this
worker leaves that queue out of its fetches for PUT_BACK_HOLD_OFF_S (the idle-first gate), so another worker, of the
newer release, takes it rather than this one again at once. The worker says so once per reason in its log, and
counts what it put back in its presence record (`scalablejob status`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from celery.exceptions import Reject

from scalablejob.model.protocol import MESSAGE_HEADER, Unhandled, message_verdict
from scalablejob.model.routing import TaskType

logger = logging.getLogger(__name__)

PUT_BACK_HOLD_OFF_S = 1.0  # how long a worker leaves a queue alone after putting a message back on it
CELERY_TASK_LOGGER = "celery.app.trace"  # logs each rejected task at WARNING, with a traceback


class PutBack(Reject):
    """A message put back because this worker cannot run it (Celery's Reject with requeue)."""


class UnhandledMessages:
    """What this worker put back: said once per reason, counted for its presence record, and its queue held off."""

    def __init__(self, reported: Callable[[int, str], None], hold_off: Callable[[TaskType, float], None]) -> None:
        self._reported = reported  # (how many so far, the latest reason)
        self._hold_off = hold_off
        self._said: set[str] = set()
        self._count = 0
        self._lock = threading.Lock()

    def put_back(self, task: Any, task_type: TaskType, unhandled: Unhandled) -> NoReturn:
        """Hand the task's message back to its queue (raises PutBack)."""
        with self._lock:
            self._count += 1
            count, first = self._count, unhandled.reason not in self._said
            self._said.add(unhandled.reason)
        if first:
            logger.warning(
                "put back on its queue for a newer worker, not run: task %s of request %s, %s (said once for this "
                "reason; `scalablejob status` counts what this worker put back)", task.name, task.request.id,
                unhandled.reason,
            )  # fmt: skip
        self._hold_off(task_type, PUT_BACK_HOLD_OFF_S)
        self._reported(count, unhandled.reason)
        raise PutBack(unhandled.reason, requeue=True)


def protocol_checked(task_type: TaskType, unhandled: UnhandledMessages) -> Callable[[Any], Any]:
    """Decorate a bound task function: its message runs only if this worker runs its version and arguments."""

    def decorate(run: Any) -> Any:
        signature = inspect.signature(run)

        @functools.wraps(run)
        def checked(task: Any, *args: Any, **kwargs: Any) -> Any:
            verdict = message_verdict(_header(task.request), _misfit(signature, task, args, kwargs))
            if verdict is not None:
                unhandled.put_back(task, task_type, verdict)
            return run(task, *args, **kwargs)

        return checked

    return decorate


def _header(request: Any) -> object:
    """The message's version header: a worker's task request has the message's headers as attributes; a task applied
    in-process (`apply(headers=...)`) has them in `headers`."""
    value = getattr(request, MESSAGE_HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(MESSAGE_HEADER)
    return value


def _misfit(signature: inspect.Signature, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why the arguments do not bind to the task function (None: they do)."""
    try:
        signature.bind(task, *args, **kwargs)
    except TypeError as exc:
        return str(exc)
    return None


class _QuietPutBacks(logging.Filter):
    """Drops Celery's own line (with a traceback) for each put-back task: the worker says it once itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], PutBack))


_QUIET_PUT_BACKS = _QuietPutBacks()


def quiet_put_backs() -> logging.Filter:
    """Install the filter on Celery's task logger (once, however often it is called); returns it."""
    logging.getLogger(CELERY_TASK_LOGGER).addFilter(_QUIET_PUT_BACKS)
    return _QUIET_PUT_BACKS
