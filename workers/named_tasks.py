"""The Job's request handlers that are no Celery task (@job.query's) as Celery tasks of the worker, each under its own
name on its type's queue, for queue-service requests only: a query handler runs in the worker's thread; a training
(command-type) one in a child process, with the command runner's streaming, cancel and timeout. The Celery tasks of
@job.task take both kinds of call themselves (workers/celery_calls.py)."""

from __future__ import annotations

from celery import Celery, Task

from scalablejob.api.job import Job
from scalablejob.model.errors import CommandFailed, HandlerError, RequestError
from scalablejob.model.routing import TaskInfo, TaskType
from scalablejob.workers.celery_calls import request_runner
from scalablejob.workers.held import TASK_TYPE_ATTRIBUTE
from scalablejob.workers.protocol_check import UnhandledMessages
from scalablejob.workers.runtime import WorkerRuntime

THROWS = {TaskType.QUERY: (HandlerError,), TaskType.COMMAND: (CommandFailed, RequestError)}  # expected failures


def register_named_tasks(
    app: Celery, runtime: WorkerRuntime, job: Job | None, unhandled: UnhandledMessages
) -> dict[str, TaskInfo]:  # fmt: skip
    """Register the request handlers of `job` that are no Celery task on `app` (a message they cannot run goes back
    to its queue through `unhandled`); returns what the task registry records of them."""
    tasks = [task for task in job.tasks.values() if task.celery_task is None] if job is not None else []
    for task in tasks:
        run = request_runner(runtime, task, unhandled)
        # not shared: a task registered on this app must not appear on every app made later in the process
        app.task(
            name=task.name, bind=True, shared=False, throws=THROWS[task.task_type], base=Task, ignore_result=True,
            **{TASK_TYPE_ATTRIBUTE: task.task_type},
        )(run)  # fmt: skip
    return {task.name: task.info for task in tasks}
