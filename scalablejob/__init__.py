"""scalablejob: an elastic, idle-first job service on Celery and Redis.

The names below load on first use, so that what a training script imports (`scalablejob.progress`) pulls in
neither Celery nor kombu nor redis: only what the code uses is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scalablejob.api.client import JobClient
    from scalablejob.api.job import Job, QueryContext
    from scalablejob.model.errors import (
        BrokerError,
        CommandFailed,
        ConfigError,
        HandlerError,
        ModelServerError,
        RequestError,
        ResultTimeout,
        ScalableJobError,
        TaskTypeError,
        UserCodeError,
    )
    from scalablejob.store.sink import SinkEntry
    from scalablejob.store.state import RequestState, RequestStatus

__all__ = [
    "BrokerError",
    "CommandFailed",
    "ConfigError",
    "HandlerError",
    "Job",
    "JobClient",
    "ModelServerError",
    "QueryContext",
    "RequestError",
    "RequestState",
    "RequestStatus",
    "ResultTimeout",
    "ScalableJobError",
    "SinkEntry",
    "TaskTypeError",
    "UserCodeError",
]
_HOME_OF = {  # each public name and the module it comes from
    "JobClient": "api.client", "Job": "api.job", "QueryContext": "api.job", "SinkEntry": "store.sink",
    "RequestState": "store.state", "RequestStatus": "store.state",
    **dict.fromkeys(
        ("BrokerError", "CommandFailed", "ConfigError", "HandlerError", "ModelServerError", "RequestError",
         "ResultTimeout", "ScalableJobError", "TaskTypeError", "UserCodeError"), "model.errors",
    ),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is asked for (PEP 562)."""
    if name not in _HOME_OF:
        raise AttributeError(f"module 'scalablejob' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"scalablejob.{_HOME_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
