"""What `job.celery` and `task.delay()` stand on: the Job's Celery app, its broker, and sending a task the
queue service's way (a request with state, index, input queue item and result entry, as JobClient.put makes)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import click

from scalablejob.api.celery_app import ServiceCelery, make_app
from scalablejob.api.client import PRIORITY_TAG, REQUEST_ID_TAG, JobClient
from scalablejob.model.config import ServiceConfig
from scalablejob.model.errors import BrokerError, RequestError, UserCodeError
from scalablejob.model.routing import TASK_TAG, TASK_TYPE_TAG, TaskInfo, TaskType
from scalablejob.store.broker import BROKER_ENV, existing_broker
from scalablejob.store.broker import data_dir as data_folder

if TYPE_CHECKING:
    from celery.result import AsyncResult


class Job(Protocol):
    """What this module needs of an api.job.Job (a protocol, so that the two modules do not import each other)."""

    service: str | None
    config: ServiceConfig | None

    @property
    def celery(self) -> ServiceCelery: ...

    def client(self) -> JobClient: ...


class JobTask(Protocol):
    """What this module needs of an api.job.JobTask."""

    name: str
    task_type: TaskType

    @property
    def job(self) -> Job: ...

    @property
    def info(self) -> TaskInfo: ...


CELERY_BROKER_ENV = "CELERY_BROKER_URL"  # what `celery --broker URL` sets; Celery reads it before any config


def broker_default() -> dict[str, str]:
    """The broker of a Job's app, looked up when the app is first configured (not when user code is imported):
    `celery --broker`, else $SCALABLEJOB_BROKER, else the embedded broker running in the data folder."""
    if os.environ.get(CELERY_BROKER_ENV):
        return {}
    try:
        return {"broker_url": os.environ.get(BROKER_ENV) or existing_broker(None, data_folder())}
    except BrokerError as exc:
        if click.get_current_context(silent=True) is not None:  # a `celery -A` command: one line, not a traceback
            raise click.ClickException(str(exc)) from exc
        raise


def service_celery(job: Job) -> ServiceCelery:
    """The Celery app of a Job's service, with the Job attached for the worker `celery -A` starts."""
    if job.service is None:
        raise UserCodeError(
            "Job() serves any service, so it has no Celery app: expected Job(config='service.json') "
            "(or $SCALABLEJOB_CONFIG, or Job('name') to send tasks only)"
        )
    app = make_app(job.service, None)
    app.add_defaults(broker_default)
    app.job = job
    app.service_config = job.config
    return app


def job_client(job: Job) -> JobClient:
    """A JobClient on the broker of `job.celery`, with the service's default taskType."""
    config = job.config
    default = config.scalable_job.default_task_type if config is not None else None
    service = job.celery.service
    return JobClient(service, str(job.celery.conf.broker_url), default_task_type=default)


def request_body(value: Any) -> bytes:
    """A task argument as a request body: bytes as they are, text as UTF-8, anything else as JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    try:
        return json.dumps(value).encode("utf-8")
    except (TypeError, ValueError):
        raise RequestError(
            f"request body of type {type(value).__name__}: expected bytes, str or JSON-serializable data"
        ) from None


def request_tags(
    task: JobTask, args: Sequence[Any], kwargs: Mapping[str, object], *, priority: int | None, task_id: str | None,
    options: Mapping[str, Any],
) -> dict[str, object]:  # fmt: skip
    """The tags of a request sent by apply_async; an option the queue service cannot honour is refused, not dropped."""
    if options:
        raise RequestError(
            f"apply_async option {', '.join(sorted(options))}: not supported by the queue service; "
            f"expected args, kwargs (tags), priority, task_id"
        )
    if len(args) > 1:
        raise RequestError(f"task {task.name}: expected one argument, the request body, got {len(args)}")
    if priority not in (None, 0, 1):
        raise RequestError(f"priority {priority!r}: expected 0 or None (normal) or 1 (ahead of normal requests)")
    tags: dict[str, object] = {**kwargs, TASK_TAG: task.name, TASK_TYPE_TAG: task.task_type.value}
    if priority == 1:
        tags[PRIORITY_TAG] = "1"
    if task_id is not None:
        tags[REQUEST_ID_TAG] = task_id
    return tags


def submit(
    task: JobTask, args: Sequence[Any], kwargs: Mapping[str, object], *, priority: int | None, task_id: str | None,
    options: Mapping[str, Any],
) -> AsyncResult:  # fmt: skip
    """Send one request to a named task through JobClient.put; its AsyncResult reads the request's state."""
    tags = request_tags(task, args, kwargs, priority=priority, task_id=task_id, options=options)
    body = request_body(args[0] if args else b"")
    _, request_id = task.job.client().put(body, tags, tasks={task.name: task.info})
    return task.job.celery.AsyncResult(request_id)
