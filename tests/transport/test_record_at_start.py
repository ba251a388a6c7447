"""A worker records a message it took as unacknowledged in its task's start, one round trip with the start
(state_start.lua), instead of one of its own on receipt (issue 26): until then the record waits in FinishAcks; an
ack of a message whose task never started has nothing to remove, a reject that requeues writes it first so that
kombu's restore finds it, and a stopping consumer writes every record still waiting. Real kombu channels on a real
redis-server."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from kombu import Connection
from transport_support import CommandLog, held, put, taken

from scalablejob.store.sink import Sink
from scalablejob.store.state import RequestStatus, RequestStore
from scalablejob.transport.acks import FinishAcks

pytestmark = pytest.mark.integration
pytest_plugins = ["transport_fixtures"]


def lazy_channel(connection: Connection) -> tuple[Any, FinishAcks, dict[str, str]]:
    """The worker's task channel: its finishes acknowledge, its starts record; task id -> tag as presence keeps it."""
    channel = connection.default_channel
    tags: dict[str, str] = {}
    acks = FinishAcks(tags.get, record_at_start={"request.task"})
    channel.keep_unacked("redis://unused", acks)
    return channel, acks, tags


def take(channel: Any, tags: dict[str, str], task_id: str, task: str = "request.task") -> Any:
    put(channel, "a", {"task": task_id}, headers={"task": task, "id": task_id})
    message = taken(channel)
    tags[task_id] = message.delivery_tag
    return message


def test_a_message_taken_is_not_written_until_its_task_starts_and_the_start_records_it(
    connection: Connection, redis_url: str, redis_client: redis.Redis, commands: CommandLog
) -> None:
    # given a queued request, and its message taken by the worker's channel
    channel, acks, tags = lazy_channel(connection)
    requests = RequestStore(redis_client, "svc")
    requests.create("r1", "query")
    start = commands.mark(redis_client)
    message = take(channel, tags, "r1")
    assert not [command for command in commands.settled(redis_client)[start:] if message.delivery_tag in command]
    assert not held(redis_client, message.delivery_tag)

    # when its task starts
    unacked = acks.message_of("r1")
    assert unacked is not None and unacked.record is not None
    attempt = requests.mark_running("r1", "w@test", message=unacked)
    acks.recorded(unacked)

    # then the start recorded it as kombu would have: kombu's restore puts it back on its queue
    assert attempt == 1
    assert held(redis_client, message.delivery_tag)
    stored, _exchange, routing_key = json.loads(redis_client.hget("unacked", message.delivery_tag))
    assert routing_key == "a" and stored["properties"]["delivery_tag"] == message.delivery_tag
    assert acks.message_of("r1") == type(unacked)(message.delivery_tag, *acks.keys)  # recorded: nothing waits
    message.reject(requeue=True)
    assert redis_client.llen("a") == 1 and not held(redis_client, message.delivery_tag)


def test_a_start_that_finds_the_request_ended_still_records_its_message(
    connection: Connection, redis_client: redis.Redis
) -> None:
    channel, acks, tags = lazy_channel(connection)
    requests = RequestStore(redis_client, "svc")
    requests.create("r1", "query")
    requests.request_cancel("r1")
    message = take(channel, tags, "r1")

    assert requests.mark_running("r1", "w@test", message=acks.message_of("r1")) == -2  # cancelled while queued
    assert held(redis_client, message.delivery_tag)  # acknowledged when its task ends, as every message is


@pytest.mark.parametrize("requeue", [False, True])
def test_a_message_whose_task_never_started_is_acked_without_redis_and_requeued_from_its_record(
    connection: Connection, redis_client: redis.Redis, commands: CommandLog, requeue: bool
) -> None:
    channel, _acks, tags = lazy_channel(connection)
    acked, rejected = take(channel, tags, "r1"), take(channel, tags, "r2")
    start = commands.mark(redis_client)

    acked.ack()
    rejected.reject(requeue=requeue)

    sent = commands.settled(redis_client)[start:]
    assert not [command for command in sent if acked.delivery_tag in command]  # never written: nothing to remove
    assert redis_client.llen("a") == (1 if requeue else 0)  # put back on its queue, as kombu's reject puts it
    assert not held(redis_client, acked.delivery_tag) and not held(redis_client, rejected.delivery_tag)
    channel.qos._flush()
    assert not channel.qos._delivered


def test_a_stopping_consumer_records_the_messages_whose_tasks_have_not_started(
    connection: Connection, redis_client: redis.Redis
) -> None:
    channel, acks, tags = lazy_channel(connection)
    first, second = take(channel, tags, "r1"), take(channel, tags, "r2")

    channel.qos.record_unrecorded()  # what GateStep.stop does

    assert held(redis_client, first.delivery_tag) and held(redis_client, second.delivery_tag)
    assert acks.unrecorded() == {}
    second.reject(requeue=True)  # the scaler (or a reject) restores it from its record
    assert redis_client.llen("a") == 1


def test_a_finish_acknowledges_a_message_its_start_recorded(connection: Connection, redis_client: redis.Redis) -> None:
    channel, acks, tags = lazy_channel(connection)
    requests = RequestStore(redis_client, "svc")
    requests.create("r1", "query")
    message = take(channel, tags, "r1")
    unacked = acks.message_of("r1")
    attempt = requests.mark_running("r1", "w@test", message=unacked)
    acks.recorded(unacked)  # type: ignore[arg-type]

    index = requests.finish(Sink(redis_client, "svc"), "r1", RequestStatus.DONE, b"", {"requestId": "r1"},
                            attempt=attempt, message=acks.message_of("r1"))  # fmt: skip

    assert index > 0 and not held(redis_client, message.delivery_tag)


def test_a_message_of_any_other_task_is_recorded_on_receipt(connection: Connection, redis_client: redis.Redis) -> None:
    # a Celery task that a Celery call runs (no request start records it), or a message without a task name
    channel, acks, tags = lazy_channel(connection)
    celery_call = take(channel, tags, "c1", task="tasks.add")
    put(channel, "a", "no headers")
    plain = taken(channel)

    assert held(redis_client, celery_call.delivery_tag) and held(redis_client, plain.delivery_tag)
    assert acks.unrecorded() == {}
