"""The Celery app factory: idle-first settings, one queue per task type, routes, and no broker connection."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from celery import Celery

from scalablejob.api.celery_app import VISIBILITY_TIMEOUT_S, make_app
from scalablejob.model.routing import TaskType, queue_for, service_queues, task_name_for

BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: any connection attempt would fail


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Celery:
    """The app of service `svc`, built and read while every socket connect fails loudly."""

    def refuse(_sock: socket.socket, address: Any) -> None:
        raise AssertionError(f"make_app tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return make_app("svc", BROKER_URL)


def test_make_app_names_the_service_and_its_broker(app: Celery) -> None:
    assert app.main == "svc"
    assert app.conf.broker_url == BROKER_URL


def test_make_app_is_idle_first(app: Celery) -> None:
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True


def test_make_app_declares_the_command_and_query_queues(app: Celery) -> None:
    queues = {queue.name: queue for queue in app.conf.task_queues}
    assert set(queues) == {"svc.command", "svc.query"}
    assert all(queue.routing_key == name for name, queue in queues.items())
    assert service_queues("svc") == ["svc.command", "svc.query"]


@pytest.mark.parametrize(("task_type", "queue"), [(TaskType.COMMAND, "svc.command"), (TaskType.QUERY, "svc.query")])
def test_make_app_routes_each_task_name_to_its_queue(app: Celery, task_type: TaskType, queue: str) -> None:
    assert app.amqp.router.route({}, task_name_for(task_type))["queue"].name == queue


def test_make_app_sends_unrouted_tasks_to_the_query_queue(app: Celery) -> None:
    assert app.conf.task_default_queue == queue_for("svc", TaskType.QUERY)


def test_make_app_keeps_unacked_messages_for_longer_than_a_long_job(app: Celery) -> None:
    visibility_timeout = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility_timeout == VISIBILITY_TIMEOUT_S
    assert visibility_timeout >= 7 * 24 * 3600


def test_make_app_leaves_the_current_app_alone(app: Celery) -> None:
    from celery import current_app

    assert current_app is not app


def test_a_service_app_runs_our_worker_reads_our_results_and_revokes_by_cancel(app: Celery) -> None:
    assert f"{app.Worker.__module__}.{app.Worker.__name__}".endswith("workers.celery_worker.ServiceWorker")
    assert type(app.backend).__name__ == "ServiceBackend" and app.backend.service == "svc"
    assert type(app.control).__name__ == "ServiceControl"
    assert app.conf.task_ignore_result is False  # Celery calls keep their results, as in Celery
