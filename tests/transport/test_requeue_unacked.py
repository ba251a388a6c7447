"""The scaler's recovery puts an unacknowledged message back at the head of its queue, on the list of its priority,
under a new delivery tag and marked redelivered: kombu's restore, but with a tag the worker that froze never had.
The service's own Celery app and transport, on a real redis-server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from celery import Celery
from transport_support import held, taken

from scalablejob.api.celery_app import make_app
from scalablejob.store.queues import NORMAL_PRIORITY, URGENT_PRIORITY, priority_list, priority_lists
from scalablejob.transport.message import task_message

pytestmark = pytest.mark.integration

QUEUE = "svc.query"
TASK = "scalablejob.query"
HEADERS = {"sent": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "note": "naïve ✓"}


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    app = make_app("svc", redis_url)
    yield app
    app.close()


@pytest.fixture
def channel(app: Celery) -> Iterator[Any]:
    with app.connection_for_write() as connection:
        yield connection.default_channel


def by_send_task(app: Celery, client: redis.Redis, task_id: str, priority: int) -> None:
    """As a Celery producer sends it: through the service's exchange, with headers only kombu's JSON writes."""
    app.send_task(TASK, args=(task_id,), task_id=task_id, queue=QUEUE, priority=priority, headers=HEADERS)


def by_put(app: Celery, client: redis.Redis, task_id: str, priority: int) -> None:
    """As a put's script pushes it: kombu's envelope on the anonymous exchange."""
    message = task_message(app, TASK, task_id, (task_id,), {}, QUEUE, priority)
    client.lpush(message.list_key, message.payload)


Send = Callable[[Celery, redis.Redis, str, int], None]
SENDS = pytest.mark.parametrize("send", [by_send_task, by_put], ids=["send_task", "put"])


def requeue(channel: Any, tag: str) -> None:
    """What the scaler's recovery does: the move, in a transaction watching the unacked hash."""
    with channel.conn_or_acquire() as client:
        client.transaction(lambda pipe: channel.requeue_unacked(pipe, tag), channel.unacked_key)


@SENDS
@pytest.mark.parametrize("priority", [URGENT_PRIORITY, NORMAL_PRIORITY])
def test_a_requeued_message_is_taken_next_under_a_new_tag_marked_redelivered(
    app: Celery, channel: Any, redis_client: redis.Redis, send: Send, priority: int
) -> None:
    # given a request's message taken by a worker, and another one queued behind it
    send(app, redis_client, "r1", priority)
    send(app, redis_client, "r2", priority)
    first = taken(channel, QUEUE)
    assert first.headers["id"] == "r1"

    # when the scaler puts it back
    requeue(channel, first.delivery_tag)

    # then it is at the head of the list of its priority, no longer unacknowledged under its old tag
    assert not held(redis_client, first.delivery_tag)
    assert redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0
    lists = {key: redis_client.llen(key) for key in priority_lists(QUEUE)}
    assert lists == {key: (2 if key == priority_list(QUEUE, priority) else 0) for key in lists}
    # and it is taken next, under a new tag, marked redelivered where both Celery and kombu look
    again = taken(channel, QUEUE)
    assert again.headers["id"] == "r1" and again.body == first.body
    assert again.delivery_tag != first.delivery_tag
    assert again.headers["redelivered"] is True
    assert again.delivery_info["redelivered"] is True
    assert held(redis_client, again.delivery_tag)


@SENDS
def test_the_requeued_message_is_the_one_kombus_restore_would_put_back_but_for_its_tag(
    app: Celery, channel: Any, redis_client: redis.Redis, send: Send
) -> None:
    send(app, redis_client, "r1", NORMAL_PRIORITY)
    message = taken(channel, QUEUE)
    tag = message.delivery_tag
    entry, score = redis_client.hget("unacked", tag), redis_client.zscore("unacked_index", tag)
    key = priority_list(QUEUE, NORMAL_PRIORITY)

    requeue(channel, tag)
    ours = json.loads(redis_client.rpop(key))
    redis_client.hset("unacked", tag, entry)
    redis_client.zadd("unacked_index", {tag: score})
    channel.qos.restore_by_tag(tag)
    kombus = json.loads(redis_client.rpop(key))

    assert kombus["properties"].pop("delivery_tag") == tag
    assert ours["properties"].pop("delivery_tag") != tag
    assert ours == kombus


def test_requeueing_a_message_already_acknowledged_does_nothing(channel: Any, redis_client: redis.Redis) -> None:
    redis_client.zadd("unacked_index", {"gone": 1.0})  # an index entry left without its message

    requeue(channel, "gone")

    assert not redis_client.exists("unacked", "unacked_index", *priority_lists(QUEUE))
