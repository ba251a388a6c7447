"""The Celery app of one service: Redis broker, one queue per task type, and the settings idle-first needs.

It is a Celery subclass so that what Celery users call keeps working the service's way: `app.Worker` (what
`celery -A module worker` runs) is a scalablejob worker, `app.AsyncResult(id)` reads the request's state, and
`app.control.revoke` (what AsyncResult.revoke() and Flower's revoke call) cancels the request. The worker, result
backend and control are named by their import path: the core imports no component, and nothing loads unused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.utils.objects import cached_property

from scalablejob.flower_logs import quiet_flower_inspector
from scalablejob.queues import NORMAL_PRIORITY, PRIORITY_STEPS
from scalablejob.redis_url import kombu_connection_options
from scalablejob.routing import TaskType, queue_for, task_name_for

if TYPE_CHECKING:
    from scalablejob.config import ServiceConfig
    from scalablejob.job import Job

# Unacked messages come back only after this long (celery #7924). Crash recovery belongs to the scaler,
# which owns the worker processes; a short timeout would run long training jobs twice.
VISIBILITY_TIMEOUT_S = 30 * 24 * 3600

SERVICE_WORKER = "scalablejob.workers.celery_worker:ServiceWorker"
RESULT_BACKEND = "scalablejob.result_backend:QueueServiceBackend"
CONTROL = "scalablejob.result_backend:ServiceControl"


class BrokerCelery(Celery):
    """A Celery app whose every broker connection (workers, producers, Flower, control) understands our broker URLs
    (scalablejob.redis_url): a Sentinel URL names its master in the query, where kombu wants the transport option
    `master_name`."""

    def _connection(self, url: str, *args: Any, **kwargs: Any) -> Any:
        kombu_url, options = kombu_connection_options(str(url))
        if options:
            kwargs["transport_options"] = {**(kwargs.get("transport_options") or {}), **options}
        return super()._connection(kombu_url, *args, **kwargs)


class ServiceCelery(BrokerCelery):
    """A service's Celery app: `service` names it; a worker also needs `service_config` and, for user code, `job`."""

    def __init__(self, service: str, broker_url: str | None) -> None:
        super().__init__(service, broker=broker_url, set_as_current=False, control=CONTROL)
        self.service = service
        self.service_config: ServiceConfig | None = None
        self.job: Job | None = None
        quiet_flower_inspector()

    @cached_property
    def Worker(self) -> Any:
        return self.subclass_with_self(SERVICE_WORKER)


def service_queues(service: str) -> list[str]:
    """The Celery queues a service's workers consume, command first."""
    return [queue_for(service, task_type) for task_type in TaskType]


def make_app(service: str, broker_url: str | None) -> ServiceCelery:
    """The Celery app of one service; producers and workers both use it. Without a broker URL, the caller adds one
    (Job.celery: lazily, so that importing user code never needs a broker)."""
    app = ServiceCelery(service, broker_url)
    exchange = Exchange(service, type="direct")
    app.conf.update(
        task_queues=[Queue(name, exchange, routing_key=name) for name in service_queues(service)],
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
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S, "priority_steps": list(PRIORITY_STEPS)},
        task_default_priority=NORMAL_PRIORITY,
        worker_send_task_events=True,  # Flower sees workers and tasks
        task_send_sent_event=True,
    )
    return app
