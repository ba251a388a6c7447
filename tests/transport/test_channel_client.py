"""One synchronous Redis client per channel serves every call kombu makes outside the BRPOP (kombu builds a new one
for each message received and acknowledged); the client that BRPOPs stays kombu's own, on its own pool."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection
from transport_support import held, put, taken

pytestmark = pytest.mark.integration
pytest_plugins = ["transport_fixtures"]


def test_the_channel_has_one_client_for_its_calls(connection: Connection) -> None:
    channel = connection.default_channel
    shared = channel.client_for_calls()

    with channel.conn_or_acquire() as acquired:
        assert acquired is shared
    assert channel._create_client() is shared
    assert channel.client_for_calls() is shared
    assert isinstance(shared, redis.Redis) and shared.connection_pool is channel.pool


def test_the_brpop_client_is_kombus_own_on_its_own_pool(connection: Connection) -> None:
    channel = connection.default_channel

    assert channel.client is not channel.client_for_calls()
    assert channel._create_client(asynchronous=True) is not channel._create_client(asynchronous=True)
    assert channel.client.connection_pool is channel.async_pool is not channel.pool


def test_taking_and_acknowledging_use_the_shared_client(connection: Connection, redis_client: redis.Redis) -> None:
    channel = connection.default_channel
    put(channel, "a", "one")
    message = taken(channel)
    assert held(redis_client, message.delivery_tag)

    message.ack()

    assert channel.qos._record.registered_client is channel.client_for_calls()
    assert not held(redis_client, message.delivery_tag)


def test_each_channel_has_a_client_of_its_own(connection: Connection) -> None:
    first, second = connection.channel(), connection.channel()

    assert first.client_for_calls() is not second.client_for_calls()


def test_the_shared_client_follows_the_pool_kombu_makes_again(connection: Connection) -> None:
    channel = connection.default_channel
    before = channel.client_for_calls()

    channel._disconnect_pools()  # what kombu does when the channel closes, or after a fork

    after = channel.client_for_calls()
    assert after is not before and after.connection_pool is channel.pool
    assert channel.client_for_calls() is after
