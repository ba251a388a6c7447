"""The Job's request handlers that are no Celery task (@job.query's) as Celery tasks of the worker, each under its own
name on its type's queue, for queue-service requests only: a query handler runs in the worker's thread; a training
(command-type) one in a child process, with the command runner's streaming, cancel and timeout. The Celery tasks of
@job.task take both kinds of call themselves (workers/celery_calls.py)."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from scalablejob.api.job import Job, JobTask
from scalablejob.api.user_code import module_spec
from scalablejob.model.errors import CommandFailed, HandlerError, RequestError
from scalablejob.model.routing import TaskInfo, TaskType
from scalablejob.workers.child_program import child_program
from scalablejob.workers.held import TASK_TYPE_ATTRIBUTE
from scalablejob.workers.protocol_check import UnhandledMessages, protocol_checked
from scalablejob.workers.runtime import WorkerRuntime
from scalablejob.workers.tasks import finish_command, finish_query, given_back_on_outage


def register_named_tasks(
    app: Celery, runtime: WorkerRuntime, job: Job | None, unhandled: UnhandledMessages
) -> dict[str, TaskInfo]:  # fmt: skip
    """Register every task of `job` on `app` (a message they cannot run goes back to its queue through `unhandled`);
    returns what the task registry records of them."""
    tasks = [task for task in job.tasks.values() if task.celery_task is None] if job is not None else []
    for task in tasks:
        if task.task_type is TaskType.QUERY:
            _register_query(app, runtime, task, unhandled)
        else:
            _register_training(app, runtime, task, module_spec(task.func), unhandled)
    return {task.name: task.info for task in tasks}


def _register_query(app: Celery, runtime: WorkerRuntime, task: JobTask, unhandled: UnhandledMessages) -> None:
    def run(self: Any, body: bytes, tags: dict[str, str], frontend: str | None = None) -> None:
        with given_back_on_outage():
            ended = runtime.run_query(self.request.id, body, tags, self.request.hostname, frontend, task.handler)
        finish_query(self, ended)

    _register(app, task, run, (HandlerError,), unhandled)


def _register_training(
    app: Celery, runtime: WorkerRuntime, task: JobTask, spec: str, unhandled: UnhandledMessages
) -> None:  # fmt: skip
    def run(self: Any, body: bytes, tags: dict[str, str], frontend: str | None = None) -> str:
        with (
            given_back_on_outage(),
            child_program(spec, task.name, self.request.id, body, tags, runtime.job_user) as program,
        ):
            ended = runtime.run_command(self.request.id, body, tags, self.request.hostname, frontend, program)
        return finish_command(self, ended)

    _register(app, task, run, (CommandFailed, RequestError), unhandled)


def _register(
    app: Celery, task: JobTask, run: Any, throws: tuple[type[Exception], ...], unhandled: UnhandledMessages
) -> None:  # fmt: skip
    run.__name__ = task.__name__
    run.__doc__ = task.__doc__
    checked = protocol_checked(task.task_type, unhandled)(run)
    # not shared: a task registered on this app must not appear on every app made later in the process
    app.task(
        name=task.name,
        bind=True,
        shared=False,
        throws=throws,
        base=Task,
        ignore_result=True,
        **{TASK_TYPE_ATTRIBUTE: task.task_type},
    )(checked)
