"""scalablejob: an elastic, idle-first job service on Celery and Redis."""

from scalablejob.client import JobClient
from scalablejob.errors import (
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
from scalablejob.job import Job, QueryContext
from scalablejob.sink import SinkEntry
from scalablejob.state import RequestState, RequestStatus

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
