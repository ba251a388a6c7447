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


class QueueFull(ScalableJobError):
    """A front end's input queue holds its maximum number of requests: retry once some have finished."""


class BrokerError(ScalableJobError):
    """The broker (Redis) could not be found, started or reached."""


class BrokerNotRunning(BrokerError):
    """No broker was given and no embedded one answers in the data folder."""


class BrokerNotAnswering(BrokerError):
    """The embedded broker of the data folder runs but did not answer in time (stopped, hung): asking it again would
    take as long."""


class BrokerRefused(BrokerError):
    """The broker answered but refused a write for now (its disk is full, it is out of memory, it is a read-only
    replica): nothing was written, and the same call succeeds once the cause is gone."""


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


class GpuError(ScalableJobError):
    """The GPUs a service asks for cannot be listed (no NVIDIA driver) or are not there."""


class ScalerError(ScalableJobError):
    """The scaler cannot run: another scaler owns the service on this host, or its settings are inconsistent."""


class PodTemplateError(ScalableJobError):
    """The worker Pod template (`scalablejob scaler --kubernetes --worker-pod FILE`) cannot make workers of the service;
    `field` is the manifest's field that is wrong (e.g. ``spec.terminationGracePeriodSeconds``)."""

    def __init__(self, source: str, field: str, message: str) -> None:
        super().__init__(f"{source}: {field}: {message}")
        self.field = field


class KubernetesError(ScalableJobError):
    """The Kubernetes pool cannot run: no client library, no cluster configuration, or the API server refused a call."""


class BindingError(ScalableJobError):
    """A front end cannot be bound to the job service as asked (wrong name for the mode, bad token, ...)."""


class QueueServiceError(ScalableJobError):
    """A queue-service request the front end refuses because of the client: the HTTP layer maps each kind to a 4xx."""


class ParameterError(QueueServiceError, ValueError):
    """A query parameter or header is malformed or out of range; `parameter` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class AuthError(QueueServiceError):
    """The Authorization header is missing or does not carry the front end's token."""


class QueueNotFound(QueueServiceError):
    """No queue of that name is served here, or no item with that index is in it."""


class PayloadTooLarge(QueueServiceError):
    """A request body is over the front end's size limit."""


class WatcherConflict(QueueServiceError):
    """A watcher of the same queue, group and client is already connected."""
