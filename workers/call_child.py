"""The child process of a Celery call of a command task: `python -m scalablejob.workers.call_child CALL RESULT`.

It imports the module of the worker's app (which may import the tasks) and the task's module, finds the task by name,
pushes the call's request (so `self.request` is the call's) and runs the task's function, not the worker's wrapper
around it. What needs the broker is sent back to the worker
(workers/call_process.py): `update_state` (and a QueryContext's progress) as a line of its output, `self.retry` and
the soft time limit (SIGUSR1) as its result record. It has no broker: its app gets an in-memory one.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scalablejob.transport.message import from_message_json as loads
from scalablejob.transport.message import message_json as dumps

PROGRESS_PREFIX = "::celery-progress "  # a line of the child's output that is a state record, not a log line
STARTED_LINE = "::celery-started"  # the line that says the task starts: its time limits count from here
_NO_BROKER = "memory://"


class ChildRetry(Exception):
    """`self.retry(...)` in the child: the worker retries the call with these options."""

    def __init__(self, options: dict[str, Any], exc: BaseException | None) -> None:
        super().__init__(repr(exc) if exc is not None else "retry")
        self.options = options
        self.exc = exc


def report_state(state: str, meta: Any) -> None:
    """The task's update_state, as a line of output: the worker, which has the broker, sets the state."""
    print(PROGRESS_PREFIX + dumps({"state": state, "meta": meta}), flush=True)


_SENT_RETRIES: list[dict[str, Any]] = []  # retries asked for with throw=False: the worker sends them, the task goes on


def retry_here(
    args: Any = None, kwargs: Any = None, exc: BaseException | None = None, throw: bool = True, eta: Any = None,
    countdown: float | None = None, max_retries: int | None = None, **options: Any,
) -> Any:  # fmt: skip
    """Task.retry, in the child: the worker does it (it has the broker). With throw=False the task goes on, as
    Celery's does once it has sent the retry."""
    wanted = {"countdown": countdown, "eta": eta, "max_retries": max_retries, "args": args, "kwargs": kwargs}
    chosen = {key: value for key, value in wanted.items() if value is not None}
    if throw:
        raise ChildRetry(chosen, exc)
    from celery.exceptions import Retry

    _SENT_RETRIES.append(chosen)
    return Retry(exc=exc, when=eta or countdown)


def soft_limit(_signum: int, _frame: Any) -> None:
    """SIGUSR1, the worker's soft time limit: SoftTimeLimitExceeded where the task is, as Celery's pool raises it."""
    from celery.exceptions import SoftTimeLimitExceeded

    raise SoftTimeLimitExceeded("soft time limit exceeded")


def error_record(exc: BaseException) -> dict[str, Any]:
    """An exception as the worker rebuilds it (its class by name and module, its message), with its traceback."""
    kind = type(exc)
    text = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
    return {"type": kind.__qualname__, "module": kind.__module__, "message": str(exc), "traceback": text}


def run(call: dict[str, Any]) -> dict[str, Any]:
    """Run the call; its record: {"value"}, {"error"}, or {"retry", "error"}; a value's or an error's also has
    "sent_retries" when the task asked for retries with throw=False."""
    os.environ["CELERY_BROKER_URL"] = _NO_BROKER  # the module's app binds its tasks without looking for a broker
    sys.path[:0] = [entry for entry in call.get("sys_path", []) if entry not in sys.path]
    from scalablejob.api.user_code import import_user_module

    signal.signal(signal.SIGUSR1, soft_limit)  # before the import: a slow one may outlast the soft limit
    try:
        # each once: a module given as a file runs again at each import
        specs = dict.fromkeys(spec for spec in (call.get("app_module"), call["module"]) if spec)
        modules = [import_user_module(spec) for spec in specs]
        task = _find_task(modules, call["name"])
        task.update_state = lambda task_id=None, state=None, meta=None, **_: report_state(str(state), meta)
        task.retry = retry_here
        task.push_request(args=call["args"], kwargs=call["kwargs"], called_directly=False, is_eager=False,
                          **call["request"])  # fmt: skip
        print(STARTED_LINE, flush=True)
        value = type(task).run(task, *call["args"], **call["kwargs"])  # the function, without the worker's wrappers
    except ChildRetry as retry:
        record: dict[str, Any] = {"retry": retry.options}
        if retry.exc is not None:
            record["error"] = error_record(retry.exc)
        return record
    except Exception as exc:
        traceback.print_exc()
        return _with_sent_retries({"error": error_record(_soft_limit_of(exc))})
    sys.stdout.flush()
    return _with_sent_retries({"value": value})


def _with_sent_retries(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "sent_retries": list(_SENT_RETRIES)} if _SENT_RETRIES else record


def _soft_limit_of(exc: Exception) -> BaseException:
    """The soft limit itself when it ended the module's import (import_user_module wraps what an import raises)."""
    from celery.exceptions import SoftTimeLimitExceeded

    return exc.__cause__ if isinstance(exc.__cause__, SoftTimeLimitExceeded) else exc


def _find_task(modules: list[Any], name: str) -> Any:
    """The task `name` of a Celery app at the top level of one of the modules (the task's, the worker's app's)."""
    from celery import Celery

    from scalablejob.api.job import Job

    for module in modules:
        for value in vars(module).values():
            app = value.task_app() if isinstance(value, Job) else value if isinstance(value, Celery) else None
            if app is not None and name in app.tasks:
                return app.tasks[name]
    names = " or ".join(module.__name__ for module in modules)
    raise LookupError(f"module {names} has no Celery task {name!r} on an app at its top level")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the call in the file CALL; its record goes to the file RESULT (a value that JSON cannot carry is an
    error); the exit status is 0 for a value, 1 otherwise."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m scalablejob.workers.call_child CALL RESULT (started by a worker)", file=sys.stderr)
        return 2
    record = run(loads(Path(args[0]).read_text(encoding="utf-8")))
    try:
        text = dumps(record)
    except (TypeError, ValueError) as exc:
        text = dumps({"error": error_record(TypeError(f"the task's return value cannot be sent as JSON: {exc}"))})
    Path(args[1]).write_text(text, encoding="utf-8")
    return 0 if "value" in record else 1


if __name__ == "__main__":
    sys.exit(main())
