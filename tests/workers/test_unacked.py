"""A task's message is acknowledged by its finish script; kombu's own ack then leaves Redis alone. A real kombu Redis
channel on a real redis-server, as a worker's consumer has."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
from kombu import Connection, Exchange, Queue

from scalablejob.store.state import UnackedMessage
from scalablejob.workers.presence import PresenceReporter
from scalablejob.workers.unacked import FinishAcks, one_client, outlive_the_channel, record_in_one_call

pytestmark = pytest.mark.integration


@pytest.fixture
def channel(redis_url: str) -> Iterator[Any]:
    with Connection(redis_url) as connection:
        channel = connection.channel()
        queue = Queue("q", Exchange("q", type="direct"), routing_key="q")
        queue(channel).declare()
        yield channel
        channel.close()


def taken(channel: Any, body: str) -> Any:
    """A message put on the queue and taken from it unacknowledged, as a worker takes a task."""
    channel.basic_publish(channel.prepare_message(body), exchange="q", routing_key="q")
    message = channel.basic_get("q", no_ack=False)
    assert message is not None
    return message


def held(client: redis.Redis, tag: str) -> bool:
    return client.hexists("unacked", tag) and client.zscore("unacked_index", tag) is not None


def test_an_ack_after_the_finish_acknowledged_touches_only_the_channels_bookkeeping(
    channel: Any, redis_client: redis.Redis
) -> None:
    acks = FinishAcks({}.get)
    outlive_the_channel(channel, "redis://unused", acks)
    finished, other = taken(channel, "finished"), taken(channel, "other")
    assert held(redis_client, finished.delivery_tag) and held(redis_client, other.delivery_tag)
    removed: list[str] = []
    remove = channel.qos._remove_from_indices

    def recording(tag: str, pipe: Any = None) -> Any:
        removed.append(tag)
        return remove(tag, pipe)

    channel.qos._remove_from_indices = recording

    # when the finish script removed `finished` from Redis (as state_finish.lua does) and said so, then both are acked
    redis_client.hdel("unacked", finished.delivery_tag)
    redis_client.zrem("unacked_index", finished.delivery_tag)
    acks.acknowledged(UnackedMessage(finished.delivery_tag, *acks.keys))
    finished.ack()
    other.ack()

    # then kombu went to Redis for the other one only, and forgot both
    assert acks.keys == (channel.qos.unacked_key, channel.qos.unacked_index_key)
    assert removed == [other.delivery_tag]
    assert not held(redis_client, other.delivery_tag)
    channel.qos._flush()
    assert finished.delivery_tag not in channel.qos._delivered and other.delivery_tag not in channel.qos._delivered
    assert not acks.take(finished.delivery_tag)  # taken once, by the ack


def test_a_finish_acknowledges_only_the_message_its_task_was_received_from() -> None:
    worker = PresenceReporter(fakeredis.FakeRedis(), "svc", heartbeat_s=3600)
    acks = FinishAcks(worker.delivery_tag_of)
    worker.received("r1", "tag-1")
    assert acks.message_of("r1") == UnackedMessage("tag-1", "unacked", "unacked_index")
    worker.finished("r1")
    assert acks.message_of("r1") is None and acks.message_of("never") is None


def test_the_channel_shares_one_client_for_its_acks_and_receipts(channel: Any) -> None:
    one_client(channel)
    assert channel._create_client() is channel._create_client()
    assert channel._create_client(asynchronous=True) is not channel._create_client()


def test_a_taken_message_is_recorded_in_one_call_as_kombu_records_it(channel: Any, redis_client: redis.Redis) -> None:
    kombus = taken(channel, "kombu's")
    one_client(channel)
    record_in_one_call(channel)
    ours = taken(channel, "ours")

    # the same record as kombu's own: the message as kombu stores it, its tag in the index
    def record(message: Any) -> tuple[list[Any], bool]:
        raw, exchange, routing_key = json.loads(redis_client.hget("unacked", message.delivery_tag))
        return [raw["body"], exchange, routing_key], redis_client.zscore("unacked_index", message.delivery_tag) > 0

    assert record(ours)[1] and record(kombus)[1]
    assert record(ours)[0][1:] == record(kombus)[0][1:] == ["q", "q"]
    assert ours.body == b"ours"

    # and kombu restores it to its queue as its own
    channel.qos.restore_by_tag(ours.delivery_tag)
    assert not redis_client.hexists("unacked", ours.delivery_tag)
    again = channel.basic_get("q", no_ack=True)
    assert again is not None and again.body == b"ours"
