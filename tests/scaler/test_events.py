"""Early wake-up: a put to the service, and Celery's task-sent events for its queues, wake the scaler; others do not."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator

import pytest

from conftest import wait_until
from scalablejob import JobClient
from scalablejob.api.celery_app import make_app
from scalablejob.model import keys
from scalablejob.scaler.events import TaskSentListener, is_for

QUEUES = {"svc.command", "svc.query"}


def event(queue: str) -> bytes:
    body = base64.b64encode(json.dumps({"type": "task-sent", "queue": queue}).encode()).decode()
    return json.dumps({"body": body, "properties": {"body_encoding": "base64"}}).encode()


@pytest.mark.parametrize(
    ("message", "wakes"),
    [(event("svc.command"), True), (event("other.command"), False), (b"not json", True), (b"{}", True)],
)
def test_only_events_for_the_service_or_unreadable_ones_wake_it(message: bytes, wakes: bool) -> None:
    assert is_for(message, QUEUES) is wakes


@pytest.fixture
def woken(redis_client) -> Iterator[threading.Event]:
    """Set when the service's listener wakes; the listener follows both channels before the test starts."""
    event = threading.Event()
    listener = TaskSentListener(redis_client, "svc", QUEUES, event.set)
    listener.start()
    try:
        wait_until(lambda: subscribed(redis_client), 10, "the listener never subscribed")
        yield event
    finally:
        listener.stop()


def subscribed(client) -> bool:
    """The listener follows Celery's task-sent events and the service's own channel."""
    channel = keys.task_sent_channel("svc")
    return client.pubsub_numpat() == 1 and dict(client.pubsub_numsub(channel)).get(channel.encode()) == 1


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_a_put_to_the_service_wakes_the_listener(redis_url: str, woken: threading.Event) -> None:
    with JobClient("other", redis_url) as other, JobClient("svc", redis_url) as client:
        other.put(b"echo", {"taskType": "command"})
        assert not woken.wait(0.3)
        client.put(b"echo", {"taskType": "command"})
        assert woken.wait(5)


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_a_task_sent_through_celery_to_the_service_wakes_the_listener(redis_url: str, woken: threading.Event) -> None:
    other, app = make_app("other", redis_url), make_app("svc", redis_url)
    try:
        other.send_task("scalablejob.command", args=(b"echo", {}), queue="other.command")
        assert not woken.wait(0.3)
        app.send_task("scalablejob.command", args=(b"echo", {}), queue="svc.command")
        assert woken.wait(5)
    finally:
        other.close()
        app.close()
