"""A message a consumer takes is recorded as unacknowledged in one script call, exactly as kombu's own Redis QoS
records it, so that kombu's restore, visibility sweep and ack work on it. Real kombu on a real redis-server, side by
side with kombu's own transport."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from kombu import Connection
from transport_support import Consuming, held, put, taken

from scalablejob.transport.kombu_redis import Transport

pytestmark = pytest.mark.integration
pytest_plugins = ["transport_fixtures"]

HEADERS = {"sent": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "note": "naïve ✓"}  # kombu's JSON only


def by_get(connection: Connection) -> Any:
    return taken(connection.default_channel)


def by_consume(connection: Connection) -> Any:
    return Consuming(connection, ["a"]).next_message()


def record(client: redis.Redis, tag: str) -> tuple[bytes, float]:
    stored = client.hget("unacked", tag)
    score = client.zscore("unacked_index", tag)
    assert stored is not None and score is not None, f"message {tag} is not recorded as unacknowledged"
    return stored, score


@pytest.mark.parametrize("take", [by_get, by_consume], ids=["basic_get", "consume"])
def test_a_taken_message_is_recorded_exactly_as_kombu_records_it(
    connection: Connection, kombus_connection: Connection, redis_client: redis.Redis,
    take: Callable[[Connection], Any],
) -> None:  # fmt: skip
    # given one message, with headers that only kombu's JSON writes (a datetime, non-ASCII text), on queue a
    put(connection.default_channel, "a", {"n": 1}, headers=HEADERS)
    envelope = redis_client.lindex("a", 0)

    # when kombu's own transport takes it, and then ours takes the very same message
    began = time.time()
    kombus = take(kombus_connection)
    kombus_record = record(redis_client, kombus.delivery_tag)
    redis_client.delete("unacked", "unacked_index")
    redis_client.lpush("a", envelope)
    ours = take(connection)
    ours_record = record(redis_client, ours.delivery_tag)

    # then both wrote the same entry, byte for byte, and indexed it by the time it was taken
    assert ours.delivery_tag == kombus.delivery_tag
    assert ours_record[0] == kombus_record[0]
    assert began <= kombus_record[1] <= ours_record[1] <= time.time()
    _, exchange, routing_key = json.loads(ours_record[0])
    assert (exchange, routing_key) == ("a", "a")
    assert ours.headers == kombus.headers and ours.headers["sent"] == HEADERS["sent"]


@pytest.fixture
def consuming_a(connection: Connection) -> Consuming:
    return Consuming(connection, ["a"])


def test_kombus_restore_by_tag_puts_our_record_back_on_its_queue(
    consuming_a: Consuming, redis_client: redis.Redis
) -> None:
    consuming_a.publish("a", "restored")
    first = consuming_a.next_message()

    consuming_a.channel.qos.restore_by_tag(first.delivery_tag)

    assert not redis_client.hexists("unacked", first.delivery_tag)
    assert redis_client.zscore("unacked_index", first.delivery_tag) is None
    again = consuming_a.next_message()
    assert again.payload == "restored"
    assert again.delivery_info["redelivered"] is True
    assert held(redis_client, again.delivery_tag)


def test_kombus_ack_removes_our_record(consuming_a: Consuming, redis_client: redis.Redis) -> None:
    consuming_a.publish("a", "done")
    message = consuming_a.next_message()
    assert held(redis_client, message.delivery_tag)

    message.ack()

    assert not redis_client.exists("unacked", "unacked_index")


@pytest.fixture
def no_visibility(redis_url: str) -> Iterator[Connection]:
    """A connection whose unacknowledged messages are all past kombu's visibility timeout."""
    with Connection(redis_url, transport=Transport, transport_options={"visibility_timeout": 0}) as connection:
        yield connection


def test_kombus_visibility_sweep_restores_our_record_by_its_time(
    no_visibility: Connection, redis_client: redis.Redis
) -> None:
    channel = no_visibility.default_channel
    put(channel, "a", "overdue")
    message = taken(channel)

    channel.qos.restore_visible()

    assert not held(redis_client, message.delivery_tag)
    assert json.loads(redis_client.lindex("a", 0))["headers"]["redelivered"] is True
