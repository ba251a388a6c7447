"""The Job's request handlers that are no Celery task (@job.query's) as Celery tasks of the worker, each under its own
name on its type's queue, for queue-service requests only: a query handler runs in the worker's thread; a training
(command-type) one in a child process, with the command runner's streaming, cancel and timeout. The Celery tasks of
@job.task take both kinds of call themselves (workers/celery_calls.py)."""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery, Task

from scalablejob.api.celery_task import is_request_message
from scalablejob.api.job import Job
from scalablejob.model.errors import CommandFailed, HandlerError, RequestError, UserCodeError
from scalablejob.model.routing import TaskInfo, TaskType
from scalablejob.workers.celery_calls import request_runner
from scalablejob.workers.held import TASK_TYPE_ATTRIBUTE
from scalablejob.workers.protocol_check import UnhandledMessages
from scalablejob.workers.runtime import WorkerRuntime

THROWS = {
    TaskType.QUERY: (HandlerError, UserCodeError),
    TaskType.COMMAND: (CommandFailed, RequestError, UserCodeError),
}  # expected failures


def register_named_tasks(
    app: Celery, runtime: WorkerRuntime, job: Job | None, unhandled: UnhandledMessages
) -> dict[str, TaskInfo]:  # fmt: skip
    """Register the request handlers of `job` that are no Celery task on `app` (a message they cannot run goes back
    to its queue through `unhandled`); returns what the task registry records of them."""
    tasks = [task for task in job.tasks.values() if task.celery_task is None] if job is not None else []
    for task in tasks:
        run = _requests_only(task.name, request_runner(runtime, task, unhandled))
        # not shared: a task registered on this app must not appear on every app made later in the process
        app.task(
            name=task.name, bind=True, shared=False, throws=THROWS[task.task_type], base=Task, ignore_result=True,
            **{TASK_TYPE_ATTRIBUTE: task.task_type},
        )(run)  # fmt: skip
    return {task.name: task.info for task in tasks}


def _requests_only(name: str, run: Any) -> Any:
    """A Celery call of a request handler fails, saying why (its arguments are no request's, and putting it back
    for a newer worker would only bring it back)."""

    @functools.wraps(run)
    def checked(task: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_request_message(task.request, args, kwargs):
            raise UserCodeError(
                f"task {name} is a request handler (@job.query): only queue-service requests call it; expected "
                f"@job.task (a Celery task) to call it the Celery way"
            )
        return run(task, *args, **kwargs)

    return checked
