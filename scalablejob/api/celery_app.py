"""The Celery app of one service: Redis broker, one queue per task type, and the settings idle-first needs.

It is a Celery subclass so that what Celery users call keeps working the service's way: `app.Worker` (what
`celery -A module worker` runs) is a scalablejob worker, `app.AsyncResult(id)` reads the request's state, and
`app.control.revoke` (what AsyncResult.revoke() and Flower's revoke call) cancels the request. The worker, result
backend and control are named by their import path: the core imports no component, and nothing loads unused.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from scalablejob.model.routing import TaskType, queue_for, service_queues, task_name_for
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
RESULT_BACKEND = "scalablejob.api.result_backend:QueueServiceBackend"
CONTROL = "scalablejob.api.result_backend:ServiceControl"
AMQP_CLASS = "scalablejob.transport.connection:AMQP"


class BrokerCelery(ConnectionHookCelery):
    """A Celery app whose every broker connection (workers, producers, Flower, control, `celery -A` commands) runs on
    scalablejob's Redis transport (its `amqp` makes them with transport.connection.Connection) and understands our
    broker URLs (store.redis_url): a Sentinel URL names its master in the query, where kombu wants the transport option
    `master_name`."""

    amqp_cls = AMQP_CLASS

    def connection_options(self, url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kombu_url, transport_options = kombu_connection_options(url)
        if transport_options:
            options["transport_options"] = {**(options.get("transport_options") or {}), **transport_options}
        return kombu_url, options


class ServiceCelery(BrokerCelery):
    """A service's Celery app: `service` names it; a worker also needs `service_config` and, for user code, `job`."""

    def __init__(self, service: str, broker_url: str | None) -> None:
        super().__init__(service, broker=broker_url, set_as_current=False, control=CONTROL)
        self.service = service
        self.service_config: ServiceConfig | None = None
        self.job: Any = None  # the user code's api.job.Job, attached by Job.celery or the worker command
        quiet_flower_inspector()

    @cached_property
    def Worker(self) -> Any:
        return self.subclass_with_self(SERVICE_WORKER)


def make_app(service: str, broker_url: str | None) -> ServiceCelery:
    """The Celery app of one service; producers and workers both use it. Without a broker URL, the caller adds one
    (Job.celery: lazily, so that importing user code never needs a broker)."""
    app = ServiceCelery(service, broker_url)
    app.conf.update(
        task_queues=service_queue_declarations(service, service_queues(service)),
        task_routes={
            task_name_for(task_type): {
                "queue": queue_for(service, task_type),
                "routing_key": queue_for(service, task_type),
            }
            for task_type in TaskType
        },
        task_default_queue=queue_for(service, TaskType.QUERY),
        task_default_exchange=service,
        # idle first: one message per slot, acknowledged only once done, back on the queue if the worker is lost
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,  # results travel through the sink stream: workers store nothing more
        result_backend=RESULT_BACKEND,  # .get() and .state read the request's state and its final entry
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
    return app
