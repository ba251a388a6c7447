"""The two Celery tasks every service worker registers: `scalablejob.command` and `scalablejob.query`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.exceptions import Reject

from scalablejob.errors import CommandFailed, HandlerError, ModelServerError, RequestError
from scalablejob.routing import TaskType, task_name_for
from scalablejob.state import RequestStatus
from scalablejob.workers.runtime import WorkerRuntime


def register_tasks(app: Celery, runtime: WorkerRuntime, on_model_server_error: Callable[[], None]) -> None:
    """Register the command and query tasks on `app`, bound to `runtime`.

    `frontend`, the request's return address, comes in the message from `JobClient.put`: the worker writes the
    request's entries to that front end's output queue. A message sent before tasks carried it has none: the
    runtime then reads the front end from the request's state.
    """

    @app.task(name=task_name_for(TaskType.COMMAND), bind=True, throws=(CommandFailed, RequestError))
    def command(self: Any, body: bytes, tags: dict[str, str], frontend: str | None = None) -> str:
        status = runtime.run_command(self.request.id, body, tags, self.request.hostname, frontend)
        if status is RequestStatus.FAILED:
            raise CommandFailed(f"request {self.request.id} failed")
        return status.value

    @app.task(name=task_name_for(TaskType.QUERY), bind=True, throws=(HandlerError,))
    def query(self: Any, body: bytes, tags: dict[str, str], frontend: str | None = None) -> None:
        try:
            runtime.run_query(self.request.id, body, tags, self.request.hostname, frontend)
        except ModelServerError as exc:
            # the model server, not the request, failed: stop taking work and hand the request back
            on_model_server_error()
            runtime.requeued(self.request.id, str(exc))
            raise Reject(str(exc), requeue=True) from exc
