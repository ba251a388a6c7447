"""Loading the user's module given with --app and finding the Job it registers. Core: the worker loads it, and `up`
checks it in a throwaway process before it starts anything."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from scalablejob.api.celery_task import FILE_MODULE_PREFIX
from scalablejob.api.job import Job, JobTask
from scalablejob.model.errors import UserCodeError


def import_user_module(spec: str) -> ModuleType:
    """Import `pkg.module` (searched from the current directory too, as celery -A does) or `path/to/file.py`."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if spec.endswith(".py"):
            return _import_file(Path(spec))
        return importlib.import_module(spec)
    except UserCodeError:
        raise
    except Exception as exc:
        raise UserCodeError(f"--app {spec}: could not import it: {type(exc).__name__}: {exc}") from exc


def load_job(app_spec: str, service: str) -> Job:
    """The Job in `module[:attribute]` that serves `service`."""
    module_spec, _, attribute = app_spec.partition(":")
    module = import_user_module(module_spec)
    if attribute:
        if not hasattr(module, attribute):
            raise UserCodeError(f"--app {app_spec}: module {module_spec} has no attribute {attribute!r}")
        job = getattr(module, attribute)
        if not isinstance(job, Job):
            raise UserCodeError(
                f"--app {app_spec}: expected {attribute} to be a scalablejob.Job, got {type(job).__name__}"
            )
        candidates = [job]
    else:
        candidates = [value for value in vars(module).values() if _is(value, Job)]
    matching = [job for job in candidates if job.service in (None, service)]
    if len(matching) != 1:
        found = ", ".join(repr(job) for job in candidates) or "none"
        raise UserCodeError(
            f"--app {app_spec}: expected exactly one scalablejob.Job for service {service!r} "
            f"(Job() or Job({service!r})), found {found}; name one as MODULE:ATTRIBUTE"
        )
    return matching[0]


def module_spec(func: Callable[..., Any]) -> str:
    """How another process imports the module that defines `func`: its name, or its file when it was loaded from a
    file (a private name) or is __main__."""
    return spec_of_module(str(getattr(func, "__module__", "") or ""))


def spec_of_module(name: str) -> str:
    """How another process imports the loaded module `name` (see module_spec)."""
    file = getattr(sys.modules.get(name), "__file__", None)
    if (name == "__main__" or name.startswith(FILE_MODULE_PREFIX) or not name) and file:
        return str(Path(file).resolve())
    return name


def load_task(spec: str, name: str) -> JobTask:
    """The named task `name` of the module `spec` (a module name or a file): a top-level JobTask of that name, or
    a task of a top-level Job."""
    module = import_user_module(spec)
    for value in vars(module).values():
        if _is(value, JobTask) and value.name == name:
            return value
        if _is(value, Job) and name in value.tasks:
            return value.tasks[name]
    raise UserCodeError(
        f"module {spec} has no task {name!r} at its top level: expected @job.task functions defined at module level"
    )


def _is(value: object, kind: type) -> bool:
    """isinstance without asking a lazy Celery task (a proxy) its class, which would bind it to its app now, before
    its worker has made the app its service's."""
    return kind in type(value).__mro__


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UserCodeError(f"--app {path}: no such file")
    name = f"{FILE_MODULE_PREFIX}{path.stem}"  # a private name: `--app proj/celery.py` must not replace celery
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserCodeError(f"--app {path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
