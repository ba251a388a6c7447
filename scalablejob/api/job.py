"""User-facing decorators, Celery-style: `job = Job(config="service.json")`, `@job.task` on each task (a real Celery
task on the service's app: a query, or a training task run in a process of its own), `@job.query` on the request
handler that answers untagged queries, `app = job.celery` for `celery -A`. The broker is looked up only when a task
is called or the app is used."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from scalablejob.api.celery_task import task_type_option
from scalablejob.api.query_context import QueryContext
from scalablejob.model.call_options import refused_options
from scalablejob.model.config import ServiceConfig, load_config
from scalablejob.model.errors import UserCodeError
from scalablejob.model.routing import TaskInfo, TaskType

if TYPE_CHECKING:
    from scalablejob.api.celery_app import ServiceCelery
    from scalablejob.api.client import JobClient

CONFIG_ENV = "SCALABLEJOB_CONFIG"  # the service config of `Job()`, e.g. for `celery -A module` run from a shell
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
_RESERVED_PREFIXES = ("scalablejob.", "celery.")  # our generic tasks and Celery's own


QueryHandler = Callable[[bytes, QueryContext], Any]


class JobTask:
    """What a Job records of one task: its function, name and type, and how a queue-service request calls it (its
    `handler`). `celery_task` is the Celery task `@job.task` returned (None for @job.query's request handler);
    Celery's calls (`delay`, `s`, ...) on the record go to it."""

    def __init__(
        self, job: Job, func: Callable[..., Any], name: str, task_type: TaskType, default: bool,
        celery_task: Any = None, bind: bool = False,
    ) -> None:  # fmt: skip
        self.job = job
        self.func = func
        self.name = name
        self.task_type = task_type
        self.default = default
        self.celery_task = celery_task
        self.handler: QueryHandler = _request_handler(self, func, bind)
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", name)
        self.__module__ = getattr(func, "__module__", __name__)
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)

    @property
    def info(self) -> TaskInfo:
        return TaskInfo(self.task_type, self.default)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__") or self.__dict__.get("celery_task") is None:
            raise AttributeError(
                f"{self!r} has no attribute {attribute!r}: @job.query registers a request handler, which only "
                f"queue-service requests call; expected @job.task for a Celery task"
            )
        return getattr(self.celery_task, attribute)

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
        self._celery: ServiceCelery | None = None
        self._client: JobClient | None = None

    @overload
    def task(self, func: Callable[..., Any], /) -> Any: ...

    @overload
    def task(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        task_type: str | TaskType = TaskType.QUERY,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Any]: ...

    def task(
        self, func: Callable[..., Any] | None = None, /, *, name: str | None = None,
        task_type: str | TaskType = TaskType.QUERY, **options: Any,
    ) -> Any:  # fmt: skip
        """Make `func` a Celery task of the service (Celery's options: bind, max_retries, autoretry_for, ...), named
        after the function, by default a query (run in a worker thread); `task_type="command"` runs it in a process of
        its own. A queue-service request calls it with its body, plus a QueryContext if it takes one."""
        known_name = name if name is not None or func is None else _name_of(func)
        kind = task_type_option(task_type, known_name)  # refused where the decorator is written

        def register(target: Callable[..., Any]) -> Any:
            task_name = _name_of(target) if name is None else name
            refused = refused_options(task_name, options)
            if refused is not None:
                raise UserCodeError(refused)
            made = self.task_app().task(target, name=task_name, task_type=kind, shared=False, **options)
            bind = bool(options.get("bind"))
            self._add(JobTask(self, target, task_name, kind, default=False, celery_task=made, bind=bind))
            return made

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
    def celery(self) -> ServiceCelery:
        """This service's Celery app, for `app = job.celery` and `celery -A module worker|inspect|status|flower`."""
        if self.service is None:
            raise UserCodeError(
                "Job() serves any service, so it has no Celery app: expected Job(config='service.json') "
                "(or $SCALABLEJOB_CONFIG, or Job('name') to send tasks only)"
            )
        return self.task_app()

    def task_app(self) -> ServiceCelery:
        """The app the tasks are made on; a Job() gets its service from the worker that loads it (serve_as)."""
        if self._celery is None:
            from scalablejob.api.celery_service import service_celery

            self._celery = service_celery(self)
        return self._celery

    def serve_as(self, config: ServiceConfig, broker_url: str) -> ServiceCelery:
        """The app a worker of `config`'s service runs: this Job's, made that service's."""
        from scalablejob.api.celery_app import configure

        app = self.task_app()
        if app.service is None:
            configure(app, config.name)
        app.conf.broker_url = broker_url
        app.service_config = config
        return app

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


def _takes_context(func: Callable[..., Any], bind: bool = False) -> bool:
    try:
        parameters = list(inspect.signature(func).parameters.values())[1 if bind else 0 :]
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


def _request_handler(record: JobTask, func: Callable[..., Any], bind: bool) -> QueryHandler:
    """How a queue-service request calls a task: `(body, ctx)` when it takes a context, else `(body)`; a bound task
    (bind=True) gets its Celery task first, as Celery gives it."""
    if not bind:
        return func if _takes_context(func) else _ignoring_context(func)
    takes = _takes_context(func, bind=True)

    def handler(body: bytes, ctx: QueryContext) -> Any:
        return func(record.celery_task, body, ctx) if takes else func(record.celery_task, body)

    handler.__name__ = getattr(func, "__name__", "handler")
    return handler


def _ignoring_context(func: Callable[[bytes], Any]) -> QueryHandler:
    def handler(body: bytes, _ctx: QueryContext) -> Any:
        return func(body)

    handler.__name__ = getattr(func, "__name__", "handler")
    return handler
