"""The Celery worker class of a service's app (`app.Worker`): what `celery -A module worker` and `scalablejob worker`
both run. It refuses the options that would break the service, sets the ones the service fixes, and prepares the
worker (workers/service.py) before Celery builds it; the model server stops when the worker does."""

from __future__ import annotations

import sys
from typing import Any

import click
from celery import concurrency
from celery.apps.worker import Worker
from click.core import ParameterSource

from scalablejob.model.config import ServiceConfig
from scalablejob.model.errors import ScalableJobError
from scalablejob.model.routing import service_queues
from scalablejob.workers.service import PreparedService, default_hostname, prepare_service
from scalablejob.workers.worker_options import (
    THREADS_POOL,
    given_options,
    refusal,
    service_options,
    shape_of,
)

EXIT_USAGE = 2  # as click exits for a usage error
EXIT_ERROR = 1
_USER_SOURCES = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def exit_with(message: str, code: int) -> None:
    """One line on stderr, then exit: what a refused option or a broken setup says."""
    print(f"Error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def option_sources() -> dict[str, bool] | None:
    """For each option of the running `celery worker` command, whether the user set it; None outside that command."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command.name != "worker":
        return None
    return {name: ctx.get_parameter_source(name) in _USER_SOURCES for name in ctx.params}


def service_config_of(app: Any) -> ServiceConfig:
    config: ServiceConfig | None = getattr(app, "service_config", None)
    if config is None:
        exit_with(
            f"the app of service {getattr(app, 'service', app.main)} has no service config, so it cannot run a "
            f"worker: expected Job(config='service.json') (or $SCALABLEJOB_CONFIG) in the module given to -A",
            EXIT_USAGE,
        )
        raise AssertionError("unreachable")
    return config


class ServiceWorker(Worker):  # type: ignore[misc]  # Celery ships no types
    """A Celery worker that is a scalablejob worker of its app's service."""

    def __init__(self, app: Any = None, hostname: str | None = None, **kwargs: Any) -> None:
        app = app or self.app
        config = service_config_of(app)
        shape = shape_of(service_queues(config.name), config.metadata.worker_threads)
        options = {**kwargs, "hostname": hostname, "disable_prefetch": app.conf.worker_disable_prefetch}
        given = given_options(options, option_sources())
        reason = refusal(options, given, shape)
        if reason is not None:
            exit_with(reason, EXIT_USAGE)
        kwargs.update(service_options(given, shape, concurrency.get_implementation(THREADS_POOL)))
        # Celery's own default, celery@HOST, would be the same for every worker on a host
        hostname = hostname if hostname and "hostname" in given else default_hostname(config.name)
        try:
            broker_url = str(app.conf.broker_url)
            self.service: PreparedService = prepare_service(
                app, config, getattr(app, "job", None), broker_url, hostname
            )
        except ScalableJobError as exc:
            exit_with(str(exc), EXIT_ERROR)
        try:
            super().__init__(app=app, hostname=hostname, **kwargs)
        except BaseException:
            self.service.stop()
            raise

    def start(self) -> None:
        try:
            super().start()
        finally:
            self.service.stop()
