"""The two Celery tasks every service worker registers, `scalablejob.command` and `scalablejob.query`, and how a
task's end shows in Celery's events (what Flower shows): a failed command is FAILURE with its exit code, a
cancelled request is REVOKED."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import redis
from celery import Celery, Task, signals
from celery.exceptions import Ignore, Reject

from scalablejob.model.errors import CommandFailed, HandlerError, ModelServerError, RequestError
from scalablejob.model.routing import TaskType, task_name_for
from scalablejob.model.task_result import command_failure
from scalablejob.store.state import RequestStatus
from scalablejob.workers.delivery import SUPERSEDED
from scalablejob.workers.held import TASK_TYPE_ATTRIBUTE
from scalablejob.workers.protocol_check import UnhandledMessages, protocol_checked
from scalablejob.workers.runtime import Ended, WorkerRuntime

logger = logging.getLogger(__name__)


def revoked(task: Any) -> NoReturn:
    """End a cancelled request's Celery task as Celery's own revoke does: a `task-revoked` event (Flower: REVOKED),
    and no `task-succeeded` after it (Ignore acknowledges the message and sends nothing)."""
    try:
        if not task.request.is_eager:  # a task applied in-process has no worker to speak for it
            task.send_event("task-revoked", terminated=True, signum=None, expired=False)
    except Exception as exc:  # an event is for monitors only: the request has already ended cancelled
        logger.warning("could not send the task-revoked event of %s: %s", task.request.id, exc)
    raise Ignore()


def finish_command(task: Any, ended: Ended) -> str:
    """What a command's Celery task returns or raises for how its request ended."""
    if not ended.ran:
        return SUPERSEDED  # another delivery ended (or ends) the request: this message is only acknowledged
    if ended.status is RequestStatus.CANCELLED:
        revoked(task)
    if ended.status is RequestStatus.FAILED:
        raise CommandFailed(f"request {task.request.id}: {command_failure(ended.error or 'failed', ended.exit_code)}")
    return ended.status.value


def finish_query(task: Any, ended: Ended) -> None:
    if ended.ran and ended.status is RequestStatus.CANCELLED:
        revoked(task)


def register_tasks(
    app: Celery, runtime: WorkerRuntime, on_model_server_error: Callable[[], None], unhandled: UnhandledMessages
) -> None:  # fmt: skip
    """Register the command and query tasks on `app`, bound to `runtime`; a message they cannot run goes back to its
    queue through `unhandled`.

    `frontend`, the request's return address, comes in the message from `JobClient.put`: the worker writes the
    request's entries to that front end's output queue. A message sent before tasks carried it has none: the
    runtime then reads the front end from the request's state.
    """

    @app.task(
        name=task_name_for(TaskType.COMMAND), bind=True, throws=(CommandFailed, RequestError), base=Task,
        ignore_result=True, **{TASK_TYPE_ATTRIBUTE: TaskType.COMMAND},
    )  # fmt: skip
    @protocol_checked(TaskType.COMMAND, unhandled)
    def command(self: Any, body: bytes, tags: dict[str, str], frontend: str | None = None) -> str:
        with given_back_on_outage():
            ended = runtime.run_command(self.request.id, body, tags, self.request.hostname, frontend)
        return finish_command(self, ended)

    @app.task(
        name=task_name_for(TaskType.QUERY),
        bind=True,
        throws=(HandlerError,),
        base=Task,
        ignore_result=True,
        **{TASK_TYPE_ATTRIBUTE: TaskType.QUERY},
    )
    @protocol_checked(TaskType.QUERY, unhandled)
    def query(self: Any, body: bytes, tags: dict[str, str], frontend: str | None = None) -> None:
        try:
            with given_back_on_outage():
                ended = runtime.run_query(self.request.id, body, tags, self.request.hostname, frontend)
        except ModelServerError as exc:
            # the model server, not the request, failed: stop taking work and hand the request back
            on_model_server_error()
            runtime.requeued(self.request.id, str(exc))
            raise Reject(str(exc), requeue=True) from exc
        finish_query(self, ended)


@contextlib.contextmanager
def given_back_on_outage() -> Iterator[None]:
    """A task whose broker failed under it goes back on its queue (its message is restored, or, with the broker
    still away, stays unacknowledged for the scaler to restore): never acknowledged as a failure."""
    try:
        yield
    except redis.RedisError as exc:
        raise Reject(f"broker failed: {exc}", requeue=True) from exc


def fail_unknown_tasks(runtime: WorkerRuntime, known: Sequence[str]) -> None:
    """A message naming a task this worker does not have (sent before its code changed) is dropped by Celery; its
    request fails with a message naming the tasks this worker has, instead of staying queued forever."""

    def unknown(sender: Any = None, name: str | None = None, id: str | None = None, **_: Any) -> None:
        if id:
            runtime.fail_unknown_task(id, str(name), known)

    signals.task_unknown.connect(unknown, weak=False)
