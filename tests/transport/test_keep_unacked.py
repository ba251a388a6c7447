"""Unacknowledged messages outlive their channel: closing it leaves them in Redis (kombu's would restore them to
their queues), acks and rejects made after the connection went go straight to Redis, and a message its task's
finish acknowledged only leaves kombu's bookkeeping. Real kombu channels on a real redis-server."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from kombu import Connection
from transport_support import CommandLog, held, put, taken

from scalablejob.local.redis_server import RedisServer
from scalablejob.store.state import UnackedMessage
from scalablejob.transport.acks import FinishAcks
from scalablejob.transport.kombu_redis import Transport

pytestmark = pytest.mark.integration
pytest_plugins = ["transport_fixtures"]


def take(channel: Any, *bodies: str) -> list[Any]:
    for body in bodies:
        put(channel, "a", body)
    return [taken(channel) for _ in bodies]


@pytest.mark.parametrize(
    ("transport", "kept", "restored"),
    [("connection", True, 0), ("connection", False, 2), ("kombus_connection", False, 2)],
)
def test_closing_the_connection_leaves_the_unacknowledged_messages_of_the_workers_channel_in_redis(
    request: pytest.FixtureRequest, redis_url: str, redis_client: redis.Redis, transport: str, kept: bool, restored: int
) -> None:
    connection: Connection = request.getfixturevalue(transport)
    channel = connection.default_channel
    if kept:  # what the worker does with its task channel; any other channel closes as kombu's does
        channel.keep_unacked(redis_url)
    messages = take(channel, "one", "two")

    connection.close()

    assert redis_client.llen("a") == restored  # kombu's own way puts them back on their queue
    assert [held(redis_client, message.delivery_tag) for message in messages] == [not restored] * 2


def test_after_the_connection_closed_acks_and_rejects_go_straight_to_redis(
    connection: Connection, redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # given three messages taken, and then the connection closed (as Celery closes it when Redis goes away)
    channel = connection.default_channel
    channel.keep_unacked(redis_url)
    acked, rejected, requeued = take(channel, "acked", "rejected", "requeued")
    connection.close()
    assert channel.connection is None

    # when their tasks end
    acked.ack()
    rejected.reject(requeue=False)
    with caplog.at_level(logging.WARNING, logger="scalablejob.transport.kombu_redis"):
        requeued.reject(requeue=True)

    # then the acknowledged ones left Redis; the requeued one stays unacknowledged, for the scaler to put back
    assert not held(redis_client, acked.delivery_tag) and not held(redis_client, rejected.delivery_tag)
    assert held(redis_client, requeued.delivery_tag)
    assert redis_client.llen("a") == 0
    assert f"message {requeued.delivery_tag} stays unacknowledged" in caplog.text


def test_an_ack_after_the_connection_closed_and_redis_went_away_is_logged_not_raised(
    connection: Connection, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    channel = connection.default_channel
    channel.keep_unacked(redis_server.url)
    acked, rejected = take(channel, "acked", "rejected")
    connection.close()
    redis_server.stop()

    with caplog.at_level(logging.WARNING, logger="scalablejob.transport.acks"):
        acked.ack()
        rejected.reject(requeue=False)

    assert f"could not acknowledge message {acked.delivery_tag} after its channel closed" in caplog.text
    assert f"could not acknowledge message {rejected.delivery_tag} after its channel closed" in caplog.text


def test_acks_made_outside_kombu_use_the_channels_own_keys(redis_url: str, redis_client: redis.Redis) -> None:
    options = {"unacked_key": "svc.unacked", "unacked_index_key": "svc.unacked_index"}
    with Connection(redis_url, transport=Transport, transport_options=options) as connection:
        channel = connection.default_channel
        acks = FinishAcks({}.get)
        channel.keep_unacked(redis_url, acks)
        (message,) = take(channel, "elsewhere")
        assert acks.keys == ("svc.unacked", "svc.unacked_index")
        assert redis_client.hexists("svc.unacked", message.delivery_tag)

    message.ack()  # after the connection closed

    assert not redis_client.exists("svc.unacked", "svc.unacked_index", "unacked", "unacked_index")


def test_while_connected_a_requeued_reject_is_kombus(
    connection: Connection, redis_url: str, redis_client: redis.Redis
) -> None:
    channel = connection.default_channel
    channel.keep_unacked(redis_url)
    (message,) = take(channel, "again")

    message.reject(requeue=True)

    assert not held(redis_client, message.delivery_tag)
    assert redis_client.llen("a") == 1


def test_an_ack_after_the_finish_acknowledged_touches_only_the_channels_bookkeeping(
    connection: Connection, redis_client: redis.Redis, commands: CommandLog
) -> None:
    # given two messages taken by a channel whose finishes acknowledge
    channel = connection.default_channel
    acks = FinishAcks({}.get)
    channel.keep_unacked("redis://unused", acks)
    finished, other = take(channel, "finished", "other")
    assert held(redis_client, finished.delivery_tag) and held(redis_client, other.delivery_tag)
    assert acks.keys == (channel.qos.unacked_key, channel.qos.unacked_index_key)

    # when the finish script removed `finished` from Redis (as state_finish.lua does) and said so, then both are acked
    redis_client.hdel("unacked", finished.delivery_tag)
    redis_client.zrem("unacked_index", finished.delivery_tag)
    acks.acknowledged(UnackedMessage(finished.delivery_tag, *acks.keys))
    start = commands.mark(redis_client)
    finished.ack()
    other.ack()

    # then kombu went to Redis for the other one only, and forgot both
    sent = commands.settled(redis_client)[start:]
    assert not [command for command in sent if finished.delivery_tag in command]
    assert ["ZREM", "unacked_index", other.delivery_tag] in sent and ["HDEL", "unacked", other.delivery_tag] in sent
    assert not held(redis_client, other.delivery_tag)
    channel.qos._flush()
    assert finished.delivery_tag not in channel.qos._delivered and other.delivery_tag not in channel.qos._delivered
    assert not acks.take(finished.delivery_tag)  # taken once, by the ack


def test_a_reject_after_the_finish_acknowledged_requeues_nothing(
    connection: Connection, redis_client: redis.Redis, commands: CommandLog
) -> None:
    channel = connection.default_channel
    acks = FinishAcks({}.get)
    channel.keep_unacked("redis://unused", acks)
    (finished,) = take(channel, "finished")
    redis_client.delete("unacked", "unacked_index")
    acks.acknowledged(UnackedMessage(finished.delivery_tag, *acks.keys))
    start = commands.mark(redis_client)

    finished.reject(requeue=True)

    assert commands.settled(redis_client)[start:] == []
    assert redis_client.llen("a") == 0
    channel.qos._flush()
    assert finished.delivery_tag not in channel.qos._delivered
