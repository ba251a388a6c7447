"""One error hierarchy for the whole service: every message names what was wrong and what was expected."""

from __future__ import annotations


class ScalableJobError(Exception):
    """Base of every error scalablejob raises on purpose."""


class ConfigError(ScalableJobError):
    """The service JSON is invalid; `path` is the JSON path of the offending field (``$`` for the root)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class TaskTypeError(ScalableJobError, ValueError):
    """A request's taskType is missing or not one of the allowed values."""


class RequestError(ScalableJobError, ValueError):
    """A request is malformed (bad tag, duplicate request id, ...)."""


class BrokerError(ScalableJobError):
    """The broker (Redis) could not be found, started or reached."""


class UserCodeError(ScalableJobError):
    """The user module given with --app could not be loaded or registers no usable handler."""


class ModelServerError(ScalableJobError):
    """The local HTTP model server did not start, stopped answering, or died."""


class ResultTimeout(ScalableJobError, TimeoutError):
    """A request did not finish within the time the caller was willing to wait."""


class HandlerError(ScalableJobError):
    """A query handler or the model server answered one request with an error; the request failed, not the worker."""


class CommandFailed(ScalableJobError):
    """A command task's process ended with a non-zero exit code."""
