"""The Celery task class of a service's app: every task on it (`@job.task`, `@app.task`, `@shared_task`, Celery's own
canvas tasks) is a real Celery task, called the Celery way, plus its type, which picks its queue and its slot on a
worker: `query` runs in a worker thread, `command` in a process of its own.

A worker gets two kinds of message for one task name. A Celery call (delay, apply_async, send_task, canvas, `celery
call`, Flower) runs the function on the message's arguments, Celery's way, with its result in Celery's result backend.
A queue-service request (JobClient.put, the front end, `scalablejob submit`; its message carries MESSAGE_HEADER) runs
it on the request's body, with the request's state, output queue and cancel. The worker's parts for both are hooks it
sets on the app (workers/celery_calls.py); outside a worker, a task runs in the calling process as Celery's do.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from celery import Task

from scalablejob.api.query_context import QueryContext
from scalablejob.model.errors import RequestError, TaskTypeError
from scalablejob.model.protocol import MESSAGE_HEADER
from scalablejob.model.routing import ALLOWED_TASK_TYPES, TaskType, parse_task_type

REQUESTS_HOOK = "scalablejob_requests"  # app attribute: runs a queue-service request's message (a worker sets it)
CHILD_HOOK = "scalablejob_child"  # app attribute: runs a Celery call of a command task in a child (a worker sets it)
LIMITS_HOOK = "scalablejob_thread_limits"  # app attribute: time limits for a task in a worker thread (a worker sets it)
CONTEXT_PARAMETER = "ctx"
REQUEST_CLASS = "scalablejob.workers.celery_calls:ServiceRequest"
FILE_MODULE_PREFIX = "scalablejob_app_"  # the private module name of user code given as a file (api/user_code.py)

Hook = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


def is_request_message(
    request: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], task: Any = None
) -> bool:  # fmt: skip
    """Whether a task's message is a queue-service request: it says its protocol version, or (a release before
    versions) it has the request's shape, `(body: bytes, tags: dict)` and at most the kwarg `frontend`, and `task`'s
    function (if given) does not take those arguments Celery's way: a Celery call says no version either, and
    `store.delay(data, meta)` has that shape."""
    if getattr(request, MESSAGE_HEADER, None) is not None:
        return True
    headers = getattr(request, "headers", None) or {}
    if MESSAGE_HEADER in headers:
        return True
    shaped = set(kwargs) <= {"frontend"} and len(args) == 2 and isinstance(args[0], bytes) and isinstance(args[1], dict)
    return shaped and (task is None or not _takes_as_call(task, args, kwargs))


def _takes_as_call(task: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    """Whether the task's function binds these arguments as a Celery call's (its QueryContext aside, which the
    worker gives); a request's (body, tags) binds to no handler (`f(body)`, `f(body, ctx)`)."""
    func = task_function(task)
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return False
    ctx_name = context_parameter(func)
    parameters = [p for p in signature.parameters.values() if p.name != ctx_name][int(takes_task_first(task)) :]
    try:
        signature.replace(parameters=parameters).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def context_parameter(func: Callable[..., Any]) -> str | None:
    """The parameter a task function takes its QueryContext in: one named `ctx`, or annotated QueryContext."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    for parameter in parameters:
        annotation = parameter.annotation
        named = getattr(annotation, "__name__", annotation)
        if parameter.name == CONTEXT_PARAMETER or named == "QueryContext":
            return parameter.name
    return None


def task_type_option(value: str | TaskType, task_name: str | None) -> TaskType:
    """A task's `task_type` option; a value no worker runs is refused naming the option (and the task, if known):
    parse_task_type's error names a request's tag, taskType, which a task's author never wrote."""
    try:
        return parse_task_type(value.value if isinstance(value, TaskType) else str(value))
    except TaskTypeError:
        of_task = "" if task_name is None else f" of task {task_name}"
        raise TaskTypeError(f"task_type {value!r}{of_task}: expected one of {', '.join(ALLOWED_TASK_TYPES)}") from None


class ServiceTask(Task):  # type: ignore[misc]  # Celery ships no types
    """A Celery task of a service; `task_type="command"` (a task option) runs it in a process of its own."""

    Request = REQUEST_CLASS
    task_type: Any = TaskType.QUERY
    scalablejob_task_type: TaskType = TaskType.QUERY

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        given = cls.__dict__.get("task_type")
        if given is not None:
            cls.task_type = cls.scalablejob_task_type = task_type_option(given, cls.__dict__.get("name", cls.__name__))
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "scalablejob_dispatch", False):
            cls.run = _dispatching(run)
            header = cls.__dict__.get("__header__")
            ctx_name = context_parameter(cls.run.__wrapped__)
            if header is not None and ctx_name is not None:
                cls.__header__ = staticmethod(_context_optional(header.__func__, cls.run.__wrapped__, ctx_name))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run by a worker (the tracer has pushed the message's request) or called directly, as Celery's tasks are;
        a queue-service request goes to the worker's request path instead."""
        request = self.request
        if request.called_directly:
            return super().__call__(*args, **kwargs)
        hook: Hook | None = getattr(self.app, REQUESTS_HOOK, None)
        if hook is not None and is_request_message(request, args, kwargs, self):
            return hook(self, args, kwargs)
        return self.run(*args, **kwargs)


def task_function(task: Any) -> Callable[..., Any]:
    """The user's function of a task, under the dispatch its class's `run` became (what a process imports it by)."""
    run = type(task).run
    return getattr(run, "__wrapped__", run)  # type: ignore[no-any-return]


def takes_task_first(task: Any) -> bool:
    """Whether the task's function takes the task first (bind=True, a class's own `run`): its class's `run` was a
    method, not Celery's staticmethod of a function, before the dispatch, a plain function, took its place."""
    return bool(getattr(type(task).run, "scalablejob_bound", True))


def _dispatching(run: Any) -> Any:
    """A task class's `run`: in a worker, a Celery call of a command task goes to a child process; a function that
    takes a QueryContext gets one (and, called with one argument, gets it as a request body)."""
    bound = not isinstance(run, staticmethod)
    func = run if bound else run.__func__
    ctx_name = context_parameter(func)

    def dispatch(self: Any, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        in_worker = not request.called_directly and not request.is_eager
        child: Hook | None = getattr(self.app, CHILD_HOOK, None)
        if in_worker and child is not None and self.scalablejob_task_type is TaskType.COMMAND:
            return child(self, args, kwargs)
        if ctx_name is not None and in_worker and ctx_name not in kwargs:
            args, kwargs = with_context(self, ctx_name, args, kwargs)
        limits = getattr(self.app, LIMITS_HOOK, None) if in_worker else None
        soft, hard = call_time_limits(self, request) if limits is not None else (None, None)
        if limits is None or not (soft or hard):
            return func(self, *args, **kwargs) if bound else func(*args, **kwargs)
        with limits(soft, hard):
            return func(self, *args, **kwargs) if bound else func(*args, **kwargs)

    dispatch.scalablejob_dispatch = True  # type: ignore[attr-defined]
    dispatch.scalablejob_bound = bound  # type: ignore[attr-defined]
    dispatch.__wrapped__ = func  # type: ignore[attr-defined]
    dispatch.__name__ = getattr(func, "__name__", "run")
    dispatch.__doc__ = func.__doc__
    return dispatch


def call_time_limits(task: Any, request: Any) -> tuple[float | None, float | None]:
    """A call's soft and hard time limits: its message's (in Celery's order there: hard, soft), else its task's."""
    hard, soft = request.timelimit or (None, None)
    return soft or task.soft_time_limit, hard or task.time_limit


def _context_optional(header: Callable[..., Any], func: Callable[..., Any], ctx_name: str) -> Callable[..., Any]:
    """Celery's argument check of a task that takes a QueryContext: the caller leaves it out, the worker gives it."""
    names = list(inspect.signature(func).parameters)
    position = names.index(ctx_name)

    def check(*args: Any, **kwargs: Any) -> Any:
        if len(args) <= position and ctx_name not in kwargs:
            kwargs = {**kwargs, ctx_name: None}
        return header(*args, **kwargs)

    return check


def with_context(
    task: Any, ctx_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:  # fmt: skip
    """A Celery call of a task written for requests: its QueryContext reports progress as the task state PROGRESS,
    and one argument is its request body (bytes, text as UTF-8, other data as JSON), as a request's would be."""

    def report(fraction: float, message: str) -> None:
        task.update_state(state="PROGRESS", meta={"progress": fraction, "message": message})

    ctx = QueryContext(str(task.request.id), {}, report)
    if len(args) == 1 and not kwargs:
        args = (request_body(args[0]),)
    return args, {**kwargs, ctx_name: ctx}


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
