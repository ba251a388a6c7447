"""A worker's two paths into one Celery task of the service (api/celery_task.py): a queue-service request runs the
task's request handler through the runtime (state, output queue, cancel, the reconciler's guarantees); a Celery call
runs it Celery's way, a command task's in a process of its own (workers/call_process.py) that revoke(terminate=True)
stops. Revokes (`AsyncResult.revoke`, `celery control revoke|terminate`, Flower) also cancel the requests they name.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import redis
from celery.worker.request import Request

from scalablejob.api.celery_task import (
    CHILD_HOOK,
    LIMITS_HOOK,
    REQUESTS_HOOK,
    ServiceTask,
    is_request_message,
    takes_task_first,
    task_function,
)
from scalablejob.api.job import Job, JobTask
from scalablejob.api.user_code import module_spec
from scalablejob.model.errors import RequestError
from scalablejob.model.routing import TaskInfo, TaskType, task_type_of
from scalablejob.store.cancel import cancel_request
from scalablejob.store.state import RequestStore
from scalablejob.upstream.celery_worker_internals import announce_terminated, signals_signum, wrap_revoke
from scalablejob.workers.call_process import CallProcesses
from scalablejob.workers.child_program import child_program
from scalablejob.workers.protocol_check import UnhandledMessages, protocol_checked
from scalablejob.workers.runtime import WorkerRuntime
from scalablejob.workers.tasks import finish_command, finish_query, given_back_on_outage
from scalablejob.workers.thread_limits import thread_time_limits

logger = logging.getLogger(__name__)

_calls = CallProcesses()  # the child processes of this worker's running Celery calls of command tasks


class ServiceRequest(Request):  # type: ignore[misc]  # Celery ships no types
    """A task request whose terminate stops a command task's process (Celery's threads pool cannot kill a thread)."""

    def terminate(self, pool: Any, signal: Any = None) -> None:
        if not self.time_start:
            super().terminate(pool, signal)  # not accepted yet: Celery terminates it again once it is
            return
        task_type = getattr(self.task, "scalablejob_task_type", None)
        if task_type is TaskType.QUERY:
            logger.warning(
                "task %s (%s) runs in a worker thread, which cannot be stopped: it runs to its end (a command task, "
                "task_type='command', runs in a process of its own, which terminate stops)", self.id, self.name,
            )  # fmt: skip
        elif task_type is TaskType.COMMAND and not is_request_message(
            SimpleNamespace(headers=self.request_dict), tuple(self.args), self.kwargs, self.task
        ):
            _calls.stop(self.id, signals_signum(signal))  # its process, also one that is only about to start
            announce_terminated(self, signal)
        # a queue-service request: its revoke has cancelled it (cancel_revoked_requests), and its worker stops it


def service_tasks(app: Any) -> dict[str, Any]:
    """The user's Celery tasks on the app: not Celery's builtins, not the generic request tasks."""
    return {
        name: task for name, task in app.tasks.items()
        if isinstance(task, ServiceTask) and not name.startswith("celery.") and task_type_of(name) is None
    }  # fmt: skip


def request_record(job: Job | None, task: Any) -> JobTask:
    """What a request runs of a task: the Job's record of it, else (a task of @app.task or @shared_task) one made
    from its function."""
    if job is not None and task.name in job.tasks:
        return job.tasks[task.name]
    record_job = job if job is not None else Job()
    func, bound = task_function(task), takes_task_first(task)
    return JobTask(record_job, func, task.name, task.scalablejob_task_type, False, celery_task=task, bind=bound)


def install_celery_calls(
    app: Any, runtime: WorkerRuntime, job: Job | None, unhandled: UnhandledMessages, client: redis.Redis
) -> dict[str, TaskInfo]:  # fmt: skip
    """Wire both paths into `app`'s tasks; returns what the task registry records of them."""
    records = {name: request_record(job, task) for name, task in service_tasks(app).items()}
    runners = {name: request_runner(runtime, record, unhandled) for name, record in records.items()}

    def run_request(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return runners[task.name](task, *args, **kwargs)

    setattr(app, REQUESTS_HOOK, run_request)
    setattr(app, CHILD_HOOK, _calls.run)
    setattr(app, LIMITS_HOOK, thread_time_limits)
    wrap_revoke(lambda ids: cancel_revoked_requests(client, runtime.service, ids))
    return {name: record.info for name, record in records.items()}


def request_runner(runtime: WorkerRuntime, record: JobTask, unhandled: UnhandledMessages) -> Any:
    """What a queue-service request of one task runs: its handler in this thread (a query), or its function in a
    child process with the command runner's streaming, cancel and timeout (a training task)."""
    if record.task_type is TaskType.QUERY:

        def query(self: Any, body: bytes, tags: dict[str, str], frontend: str | None = None) -> None:
            with given_back_on_outage():
                ended = runtime.run_query(self.request.id, body, tags, self.request.hostname, frontend, record.handler)
            finish_query(self, ended)

        query.__name__, query.__doc__ = record.__name__, record.__doc__
        return protocol_checked(TaskType.QUERY, unhandled)(query)
    spec = module_spec(record.func)

    def command(self: Any, body: bytes, tags: dict[str, str], frontend: str | None = None) -> str:
        with (
            given_back_on_outage(),
            child_program(spec, record.name, self.request.id, body, tags, runtime.job_user) as program,
        ):
            ended = runtime.run_command(self.request.id, body, tags, self.request.hostname, frontend, program)
        return finish_command(self, ended)

    command.__name__, command.__doc__ = record.__name__, record.__doc__
    return protocol_checked(TaskType.COMMAND, unhandled)(command)


def cancel_revoked_requests(client: redis.Redis, service: str, ids: list[str]) -> None:
    """A revoke that names queue-service requests cancels them (a running one is stopped by its worker)."""
    requests = RequestStore(client, service)
    for request_id in ids:
        try:
            state = requests.get(request_id)
            if state is not None and not state.status.finished:
                cancel_request(client, service, request_id)
        except RequestError:
            continue  # it ended meanwhile
        except redis.RedisError as exc:  # raised, it would skip Celery's own revoke (wrap_revoke calls this first)
            logger.warning("could not cancel request %s on its revoke: %s", request_id, exc)
