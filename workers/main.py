"""`scalablejob worker`: one real Celery worker for a service, consuming its command and query queues.

It runs the same worker as `celery -A module worker` (workers/celery_worker.py, the app's Worker class), on an app
made from the config file, with the user code of --app, if any."""

from __future__ import annotations

import os
from collections.abc import Sequence

from celery import signals

from scalablejob.api.celery_app import make_app
from scalablejob.api.user_code import load_job
from scalablejob.host.processes import forbid_inspection
from scalablejob.model.config import ServiceConfig
from scalablejob.store.broker import BROKER_ENV
from scalablejob.workers.service import default_hostname


def worker_argv(hostname: str, extra: Sequence[str] = ()) -> list[str]:
    """The `celery worker` command line; the worker class sets the queues, pool and slots from the config."""
    return ["worker", "-n", hostname, "-l", "INFO", *extra]


def run_worker(
    config: ServiceConfig, broker_url: str, *, app_spec: str | None = None,
    hostname: str | None = None, celery_args: Sequence[str] = (),
) -> int:  # fmt: skip
    """Run the worker in the foreground until it is stopped; returns its exit code."""
    forbid_inspection()  # before the user code of --app is imported: its jobs may not read our environment
    previous_broker = os.environ.get(BROKER_ENV)
    os.environ[BROKER_ENV] = broker_url  # the user code's own `job.celery` (and its training tasks) find it too
    try:
        job = load_job(app_spec, config.name) if app_spec else None
        app = job.serve_as(config, broker_url) if job is not None else make_app(config.name, broker_url)
        app.service_config = config
        app.job = job
        exit_codes: list[int] = []
        signals.worker_shutdown.connect(lambda sender, **_: exit_codes.append(sender.exitcode or 0), weak=False)
        # app.start() drops the worker's exit code (click returns it instead of raising); the signal carries it
        usage_error = app.start(argv=worker_argv(hostname or default_hostname(config.name), celery_args))
        return usage_error or (exit_codes[-1] if exit_codes else 0)
    finally:  # run in-process (tests, embedding), the caller's environment is left as it was
        if previous_broker is None:
            os.environ.pop(BROKER_ENV, None)
        else:
            os.environ[BROKER_ENV] = previous_broker
