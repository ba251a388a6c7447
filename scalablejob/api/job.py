"""User-facing decorators, Celery-style: `job = Job(config="service.json")`, `@job.task` on each named task (a query,
or a training task run as a command), `@job.query` on the one that answers untagged queries, `app = job.celery` for
`celery -A`. Celery and Redis load only when `job.celery` or `.delay()` is used."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from scalablejob.model.config import ServiceConfig, load_config
from scalablejob.model.errors import UserCodeError
from scalablejob.model.routing import TaskInfo, TaskType, parse_task_type

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult

    from scalablejob.api.client import JobClient

ProgressReporter = Callable[[float, str], None]
CONFIG_ENV = "SCALABLEJOB_CONFIG"  # the service config of `Job()`, e.g. for `celery -A module` run from a shell
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
_RESERVED_PREFIXES = ("scalablejob.", "celery.")  # our generic tasks and Celery's own


class QueryContext:
    """What a task knows about its request, and how it reports progress while it runs."""

    def __init__(
        self,
        request_id: str,
        tags: Mapping[str, str],
        report: ProgressReporter,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.request_id = request_id
        self.tags = dict(tags)
        self._report = report
        self._is_cancelled = is_cancelled or (lambda: False)

    @property
    def cancelled(self) -> bool:
        """True once someone cancelled this request: a long handler checks it and returns early."""
        return self._is_cancelled()

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far this request is, from 0.0 to 1.0; visible in the request's state while it runs."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction: expected a number from 0.0 to 1.0, got {fraction!r}")
        self._report(float(fraction), str(message))


QueryHandler = Callable[[bytes, QueryContext], Any]


class JobTask:
    """A registered task: calling it runs the function here; `.delay()` / `.apply_async()` send it to the service."""

    def __init__(self, job: Job, func: Callable[..., Any], name: str, task_type: TaskType, default: bool) -> None:
        self.job = job
        self.func = func
        self.name = name
        self.task_type = task_type
        self.default = default
        self.handler: QueryHandler = func if _takes_context(func) else _ignoring_context(func)
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", name)
        self.__module__ = getattr(func, "__module__", __name__)
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)

    @property
    def info(self) -> TaskInfo:
        return TaskInfo(self.task_type, self.default)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def delay(self, body: Any = b"", **tags: object) -> AsyncResult:
        """Send one request to this task: `body` as bytes, text (UTF-8) or JSON data; keyword arguments are tags."""
        return self.apply_async((body,), tags)

    def apply_async(
        self, args: tuple[Any, ...] | list[Any] | None = None, kwargs: Mapping[str, object] | None = None, *,
        priority: int | None = None, task_id: str | None = None, **options: Any,
    ) -> AsyncResult:  # fmt: skip
        """Celery's apply_async through the queue service: `args` holds the body, `kwargs` are tags, `priority=1`
        goes ahead of normal requests, `task_id` becomes the request id."""
        from scalablejob.api.celery_service import submit  # Celery and Redis load only when something is sent

        return submit(self, args or (), kwargs or {}, priority=priority, task_id=task_id, options=options)

    def __repr__(self) -> str:
        return f"<{self.task_type.value} task {self.name} of {self.job!r}>"


class Job:
    """A service's user code. `Job(config="service.json")` knows its service and can be run by `celery -A`;
    `Job("svc")` names only the service; `Job()` serves any service (or the config in $SCALABLEJOB_CONFIG)."""

    def __init__(self, service: str | None = None, *, config: str | os.PathLike[str] | None = None) -> None:
        if config is None and service is None:
            config = os.environ.get(CONFIG_ENV) or None
        self.config_path = None if config is None else Path(config).resolve()
        self.config: ServiceConfig | None = None if self.config_path is None else load_config(self.config_path)
        if self.config is not None and service not in (None, self.config.name):
            raise UserCodeError(f"Job({service!r}, config={str(config)!r}): the config's service is {self.config.name}")
        self.service = service or (self.config.name if self.config else None)
        self.tasks: dict[str, JobTask] = {}
        self._celery: Celery | None = None
        self._client: JobClient | None = None

    @overload
    def task(self, func: Callable[..., Any], /) -> JobTask: ...

    @overload
    def task(
        self, func: None = None, /, *, name: str | None = None, task_type: str | TaskType = TaskType.QUERY
    ) -> Callable[[Callable[..., Any]], JobTask]: ...

    def task(
        self, func: Callable[..., Any] | None = None, /, *, name: str | None = None,
        task_type: str | TaskType = TaskType.QUERY,
    ) -> JobTask | Callable[[Callable[..., Any]], JobTask]:  # fmt: skip
        """Register `func(body: bytes, ctx: QueryContext)` (or `func(body)`) as a named task, by default a query
        named after the function; `task_type="command"` makes it a training task, run in a child process."""
        kind = parse_task_type(task_type.value if isinstance(task_type, TaskType) else task_type)

        def register(target: Callable[..., Any]) -> JobTask:
            return self._add(JobTask(self, target, _name_of(target) if name is None else name, kind, default=False))

        return register(func) if func is not None else register

    def query(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Register `func(body: bytes, ctx: QueryContext)` (or `func(body)`) as the query task that answers queries
        without a `task` tag; it is also a named task (the function's name). Returns the function unchanged."""
        first = next((task for task in self.tasks.values() if task.default), None)
        if first is not None:
            raise UserCodeError(
                f"service {self.service or '(any)'} already has query handler {first.name}; expected one @query per Job"
            )
        self._add(JobTask(self, func, _name_of(func), TaskType.QUERY, default=True))
        return func

    @property
    def default_task(self) -> JobTask | None:
        """The query task of untagged queries: the @job.query one, else the only query task, else none."""
        queries = [task for task in self.tasks.values() if task.task_type is TaskType.QUERY]
        marked = [task for task in queries if task.default]
        if marked:
            return marked[0]
        return queries[0] if len(queries) == 1 else None

    @property
    def query_handler(self) -> QueryHandler | None:
        """The handler @job.query registered (None without one)."""
        marked = [task for task in self.tasks.values() if task.default]
        return marked[0].handler if marked else None

    @property
    def celery(self) -> Celery:
        """This service's Celery app, for `app = job.celery` and `celery -A module worker|inspect|status|flower`."""
        if self._celery is None:
            from scalablejob.api.celery_service import service_celery

            self._celery = service_celery(self)
        return self._celery

    def client(self) -> JobClient:
        """The JobClient `.delay()` sends through, on the broker of `job.celery`."""
        if self._client is None:
            from scalablejob.api.celery_service import job_client

            self._client = job_client(self)
        return self._client

    def close(self) -> None:
        """Close the broker connections `.delay()` and `job.celery` opened, if any."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._celery is not None:
            self._celery.close()

    def _add(self, task: JobTask) -> JobTask:
        if not _TASK_NAME.fullmatch(task.name) or task.name.startswith(_RESERVED_PREFIXES):
            raise UserCodeError(
                f"task name {task.name!r}: expected up to 128 of A-Z a-z 0-9 _ . : - starting with a letter or _, "
                f"and not starting with {' or '.join(_RESERVED_PREFIXES)}"
            )
        if task.name in self.tasks:
            raise UserCodeError(f"{self!r} already has a task named {task.name!r}: expected one task per name")
        self.tasks[task.name] = task
        return task

    def __repr__(self) -> str:
        return f"Job(service={self.service!r})"


def _name_of(func: Callable[..., Any]) -> str:
    """A task's default name: its function's, made a valid name (`<lambda>` -> `_lambda_`)."""
    name = re.sub(r"[^A-Za-z0-9_.:-]", "_", str(getattr(func, "__name__", "task")))[:128]
    return name if re.match(r"[A-Za-z_]", name) else f"_{name}"[:128]


def _takes_context(func: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


def _ignoring_context(func: Callable[[bytes], Any]) -> QueryHandler:
    def handler(body: bytes, _ctx: QueryContext) -> Any:
        return func(body)

    handler.__name__ = getattr(func, "__name__", "handler")
    return handler
