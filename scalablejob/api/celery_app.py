"""The Celery app of one service: Redis broker, one queue per task type, and the settings idle-first needs.

It is a Celery subclass so that what Celery users call keeps working, on the service: its tasks are ServiceTasks
(api/celery_task.py) routed to their type's queue, `app.Worker` (what `celery -A module worker` runs) is a scalablejob
worker, results are in Celery's Redis result backend on the broker (a queue-service request's `AsyncResult(id)` reads
the request), `app.control.revoke` also cancels requests, and `send_task` refuses at once what no worker of the
service could run. The worker, task class, result backend and control are named by their import path: the core
imports no component, and nothing loads unused.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

import click
from celery.utils.imports import symbol_by_name

from scalablejob.api.celery_task import FILE_MODULE_PREFIX
from scalablejob.model.call_options import refused_call
from scalablejob.model.errors import BrokerError, RequestError
from scalablejob.model.routing import TASK_TYPE_ATTRIBUTE, TaskType, queue_for, service_queues
from scalablejob.model.routing import task_type_of as generic_task_type
from scalablejob.store.broker import BROKER_ENV, existing_broker
from scalablejob.store.broker import data_dir as data_folder
from scalablejob.store.queues import NORMAL_PRIORITY, PRIORITY_STEPS
from scalablejob.store.redis_url import kombu_connection_options
from scalablejob.transport.message import TASK_EVENTS_EXCHANGE, service_queue_declarations
from scalablejob.upstream.celery_internals import ConnectionHookCelery
from scalablejob.upstream.flower_internals import quiet_flower_inspector

if TYPE_CHECKING:
    from scalablejob.model.config import ServiceConfig

# Unacked messages come back only after this long (celery #7924). Crash recovery belongs to the scaler,
# which owns the worker processes; a short timeout would run long training jobs twice.
VISIBILITY_TIMEOUT_S = 30 * 24 * 3600

SERVICE_WORKER = "scalablejob.workers.celery_worker:ServiceWorker"
RESULT_BACKEND = "scalablejob.api.result_backend:ServiceBackend"
RESULT_BACKEND_URL = "redis://"  # what the app's config says of its results: they are in the broker's Redis
TASK_CLASS = "scalablejob.api.celery_task:ServiceTask"
CONTROL = "scalablejob.api.result_backend:ServiceControl"
FLOWER_SETUP = "scalablejob.local.flower:prepare_service_flower"  # what `celery -A module flower` runs first
AMQP_CLASS = "scalablejob.transport.connection:AMQP"


NO_BROKER = "scalablejob-no-broker://"  # the broker of an app that found none when configured: looked up again on use
CELERY_BROKER_ENV = "CELERY_BROKER_URL"  # what `celery --broker URL` sets; Celery reads it before any config


def required_broker() -> str:
    """$SCALABLEJOB_BROKER, else the embedded broker running in the data folder; a BrokerError that says how to start
    one (in a `celery -A` command: one line, not a traceback)."""
    try:
        return os.environ.get(BROKER_ENV) or existing_broker(None, data_folder())
    except BrokerError as exc:
        if click.get_current_context(silent=True) is not None:
            raise click.ClickException(str(exc)) from exc
        raise


def broker_url_of(app: Any) -> str:
    """The app's broker URL, looked up now if none was found when it was configured."""
    url = str(app.conf.broker_url)
    return required_broker() if url == NO_BROKER else url


class BrokerCelery(ConnectionHookCelery):
    """A Celery app whose every broker connection (workers, producers, Flower, control, `celery -A` commands) runs on
    scalablejob's Redis transport (its `amqp` makes them with transport.connection.Connection) and understands our
    broker URLs (store.redis_url): a Sentinel URL names its master in the query, where kombu wants the transport option
    `master_name`."""

    amqp_cls = AMQP_CLASS

    def connection_options(self, url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if url.startswith(NO_BROKER):
            url = required_broker()
        kombu_url, transport_options = kombu_connection_options(url)
        if transport_options:
            options["transport_options"] = {**(options.get("transport_options") or {}), **transport_options}
        return kombu_url, options


class ServiceCelery(BrokerCelery):
    """A service's Celery app: `service` names it; a worker also needs `service_config` and, for user code, `job`."""

    backend_cls = RESULT_BACKEND  # Celery's Redis backend on the broker (conf.result_backend only says "redis://")

    def __init__(self, service: str | None, broker_url: str | None) -> None:
        super().__init__(service, broker=broker_url, set_as_current=False, control=CONTROL, task_cls=TASK_CLASS)
        self.conf.update(service_settings())  # before any task is bound: a task reads them once, when bound
        self.service = service
        self.service_config: ServiceConfig | None = None
        self.job: Any = None  # the user code's api.job.Job, attached by Job.celery or the worker command
        quiet_flower_inspector()
        if _running_command() == "flower":
            symbol_by_name(FLOWER_SETUP)()

    @cached_property
    def Worker(self) -> Any:
        return self.subclass_with_self(SERVICE_WORKER)

    def gen_task_name(self, name: str, module: str) -> str:
        """Celery's default name, `module.function`, with a module loaded from its file (`--app tasks.py`) under the
        name it has when imported (`tasks`), so that callers and workers agree on it."""
        if module.startswith(FILE_MODULE_PREFIX):
            module = module[len(FILE_MODULE_PREFIX) :]
        return str(super().gen_task_name(name, module))

    def task_type_of(self, name: str) -> TaskType | None:
        """The type of a task by name: of this process's task, else of the service's registry in Redis (a process
        without the task code); None when neither knows it."""
        generic = generic_task_type(name)
        if generic is not None:
            return generic
        task = self.tasks.get(name)
        if task is not None:
            declared = getattr(task, TASK_TYPE_ATTRIBUTE, None)
            return declared if isinstance(declared, TaskType) else TaskType.QUERY
        from scalablejob.store.task_registry import read_tasks

        info = read_tasks(self.backend.client, str(self.service)).get(name)
        return None if info is None else info.task_type

    def known_names(self) -> list[str]:
        """Every task a worker of the service runs, as its registry says (empty before any worker started)."""
        from scalablejob.store.task_registry import read_tasks

        return sorted(read_tasks(self.backend.client, str(self.service)))

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Celery's send_task, refusing at once a call that no worker of the service could run as asked."""
        if self.service is not None:
            task_type = self.task_type_of(name)
            reason = refused_call(name, task_type, self.known_names() if task_type is None else [], options,
                                  str(self.service))  # fmt: skip
            if reason is not None:
                raise RequestError(reason)
        return super().send_task(name, args, kwargs, **options)

    def route(self, name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any) -> dict[str, str]:
        """A task goes to its type's queue (Celery's builtins and unknown names: the query queue)."""
        declared = getattr(task, TASK_TYPE_ATTRIBUTE, None)
        if not isinstance(declared, TaskType):
            declared = self.task_type_of(name) or TaskType.QUERY
        queue = queue_for(str(self.service), declared)
        return {"queue": queue, "routing_key": queue}


def _running_command() -> str | None:
    """The `celery` sub-command this process runs (`flower`, `worker`, ...), if it is one."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None and ctx.parent is not None:
        ctx = ctx.parent
    return None if ctx is None else ctx.invoked_subcommand


def make_app(service: str, broker_url: str | None) -> ServiceCelery:
    """The Celery app of one service; producers and workers both use it. Without a broker URL, the caller adds one
    (Job.celery: lazily, so that importing user code never needs a broker)."""
    app = ServiceCelery(service, broker_url)
    configure(app, service)
    return app


def configure(app: ServiceCelery, service: str) -> None:
    """Make `app` the Celery app of `service` (also one a Job() made before it knew its service): its queues."""
    app.service = service
    app.main = service
    app.conf.update(
        task_queues=service_queue_declarations(service, service_queues(service)),
        task_routes=(app.route,),
        task_default_queue=queue_for(service, TaskType.QUERY),
        task_default_exchange=service,
    )


def service_settings() -> dict[str, Any]:
    """What every service's app sets, whatever its service."""
    return dict(
        # idle first: one message per slot, acknowledged only once done, back on the queue if the worker is lost
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        result_backend=RESULT_BACKEND_URL,  # the class is backend_cls: Celery's on the broker, and the requests' states
        result_extended=True,  # `celery result`, Flower and AsyncResult.name/args see what a task was called with
        task_track_started=True,  # STARTED while it runs, as Flower and a request's state show it
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlasts any outage: its finished job's result waits for Redis
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S, "priority_steps": list(PRIORITY_STEPS)},
        task_default_priority=NORMAL_PRIORITY,
        worker_send_task_events=True,  # Flower sees workers and tasks
        event_exchange=TASK_EVENTS_EXCHANGE,  # the scaler listens for task-sent events there
        task_send_sent_event=True,
    )
