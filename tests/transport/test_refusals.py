"""A broker that refuses for now (MISCONF on a full disk; here NOREPLICAS, which a real redis-server gives at will)
is a lost connection to kombu, which drops it and lets Celery reconnect, not an error that ends the worker."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection
from transport_support import Consuming

from scalablejob.transport.refusals import BrokerRefusing, refusals_as_lost

pytestmark = pytest.mark.integration
pytest_plugins = ["transport_fixtures"]


def test_a_refused_command_is_a_lost_connection_and_any_other_error_stays_an_error(redis_url, redis_client):
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=refusals_as_lost(redis.Connection))
    client = redis.Redis(connection_pool=pool)
    redis_client.set("text", "x")
    redis_client.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(BrokerRefusing, match="NOREPLICAS"):
            client.lpush("queue", "message")
        assert redis_client.llen("queue") == 0  # refused before it ran
    finally:
        redis_client.config_set("min-replicas-to-write", 0)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE") as wrong:
        client.lpush("text", "message")
    assert not isinstance(wrong.value, redis.ConnectionError)
    client.close()


def test_a_consumer_whose_brpop_is_refused_loses_its_connection_and_takes_the_message_once_it_is_not(
    connection: Connection, consuming: Consuming, redis_client: redis.Redis
):
    # given a consumer, and a message queued
    consuming.publish("a", {"n": 1})

    # when the broker refuses the consumer's BRPOP, then kombu sees a lost connection (Celery reconnects from one)
    redis_client.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(connection.connection_errors) as lost:
            connection.drain_events(timeout=2)
        assert isinstance(lost.value, BrokerRefusing)
    finally:
        redis_client.config_set("min-replicas-to-write", 0)

    # and once the broker takes writes again, the message is taken, once
    assert consuming.next_message().payload == {"n": 1}
    assert redis_client.llen("a") == 0
