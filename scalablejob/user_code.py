"""Loading the user's module given with --app and finding the Job it registers. Core: the worker loads it, and `up`
checks it in a throwaway process before it starts anything."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from scalablejob.errors import UserCodeError
from scalablejob.job import Job


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
        candidates = [value for value in vars(module).values() if isinstance(value, Job)]
    matching = [job for job in candidates if job.service in (None, service)]
    if len(matching) != 1:
        found = ", ".join(repr(job) for job in candidates) or "none"
        raise UserCodeError(
            f"--app {app_spec}: expected exactly one scalablejob.Job for service {service!r} "
            f"(Job() or Job({service!r})), found {found}; name one as MODULE:ATTRIBUTE"
        )
    return matching[0]


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UserCodeError(f"--app {path}: no such file")
    name = f"scalablejob_app_{path.stem}"  # a private name: `--app proj/celery.py` must not replace celery
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
