"""The Celery app of one service: Redis broker, one queue per task type, and the settings idle-first needs."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from scalablejob.queues import NORMAL_PRIORITY, PRIORITY_STEPS
from scalablejob.routing import TaskType, queue_for, task_name_for

# Unacked messages come back only after this long (celery #7924). Crash recovery belongs to the scaler,
# which owns the worker processes; a short timeout would run long training jobs twice.
VISIBILITY_TIMEOUT_S = 30 * 24 * 3600


def service_queues(service: str) -> list[str]:
    """The Celery queues a service's workers consume, command first."""
    return [queue_for(service, task_type) for task_type in TaskType]


def make_app(service: str, broker_url: str) -> Celery:
    """The Celery app of one service; producers and workers both use it."""
    app = Celery(service, broker=broker_url, set_as_current=False)
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
        task_ignore_result=True,  # results travel through the sink stream, not a result backend
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S, "priority_steps": list(PRIORITY_STEPS)},
        task_default_priority=NORMAL_PRIORITY,
        worker_send_task_events=True,  # Flower sees workers and tasks
        task_send_sent_event=True,
    )
    return app
