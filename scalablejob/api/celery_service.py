"""What `job.celery` and `job.client()` stand on: the Job's Celery app (current, as a Celery project's own app is) and
its broker, looked up when first needed."""

from __future__ import annotations

import os
from typing import Protocol

from scalablejob.api.celery_app import (
    CELERY_BROKER_ENV,
    NO_BROKER,
    ServiceCelery,
    broker_url_of,
    make_app,
    required_broker,
)
from scalablejob.api.client import JobClient
from scalablejob.model.config import ServiceConfig
from scalablejob.model.errors import BrokerError


class Job(Protocol):
    """What this module needs of an api.job.Job (a protocol, so that the two modules do not import each other)."""

    service: str | None
    config: ServiceConfig | None

    @property
    def celery(self) -> ServiceCelery: ...

    def client(self) -> JobClient: ...


def broker_default() -> dict[str, str]:
    """The broker of a Job's app, looked up when the app is first configured (not when user code is imported):
    `celery --broker`, else $SCALABLEJOB_BROKER, else the embedded broker running in the data folder, else none yet:
    the app's first connection looks again, and says why it has none (binding tasks needs no broker)."""
    if os.environ.get(CELERY_BROKER_ENV):
        return {}
    try:
        return {"broker_url": required_broker()}
    except BrokerError:
        return {"broker_url": NO_BROKER}


def service_celery(job: Job) -> ServiceCelery:
    """The Celery app of a Job's service, with the Job attached for the worker `celery -A` starts; a Job() that
    serves any service gets an app that its worker makes the service's (Job.serve_as)."""
    app = make_app(job.service, None) if job.service is not None else ServiceCelery(None, None)
    app.add_defaults(broker_default)
    app.set_current()  # as a Celery project's own app: @shared_task and current_app find it
    app.job = job
    app.service_config = job.config
    return app


def job_client(job: Job) -> JobClient:
    """A JobClient on the broker of `job.celery`, with the service's default taskType."""
    config = job.config
    default = config.scalable_job.default_task_type if config is not None else None
    service = str(job.celery.service)
    return JobClient(service, broker_url_of(job.celery), default_task_type=default)
