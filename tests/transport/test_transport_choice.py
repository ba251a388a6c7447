"""Every broker connection of the service's Celery app (workers, producers, `celery -A` commands, Flower) runs
scalablejob's transport wherever kombu would run its Redis one (redis://, rediss://, sentinel://), with everything
else as kombu has it: the transport's name, the URL as printed, TLS settings; another broker stays kombu's choice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kombu
import pytest
from celery import Celery
from kombu import pools
from kombu.transport import redis as kombu_redis
from kombu.utils.imports import symbol_by_name

from scalablejob.api.celery_app import VISIBILITY_TIMEOUT_S, make_app
from scalablejob.store.queues import PRIORITY_STEPS
from scalablejob.transport import kombu_redis as ours
from scalablejob.transport.connection import Connection
from scalablejob.transport.kombu_redis import QoS, SentinelChannel, SentinelTransport, Transport

SENTINEL_URL = "sentinel://127.0.0.1:1;sentinel://127.0.0.1:2/0?master=mymaster"  # nothing is asked of it


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("redis://127.0.0.1:6379/0", Transport),
        ("redis://:secret@127.0.0.1:6379/3", Transport),
        ("redis://127.0.0.1:1/0;redis://127.0.0.1:2/0", Transport),
        ("rediss://127.0.0.1:6380/0", Transport),
        ("sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380/0", SentinelTransport),
        ("memory://", symbol_by_name("kombu.transport.memory:Transport")),
    ],
)
def test_kombus_redis_transports_resolve_to_ours_and_keep_kombus_names(url: str, transport: type) -> None:
    with Connection(url) as connection, kombu.Connection(url) as kombus:
        assert type(connection.transport) is transport
        # everything else is kombu's own: the transport's name, the URL as printed, the TLS settings
        assert connection.transport_cls == kombus.transport_cls
        assert connection.as_uri() == kombus.as_uri() and connection.ssl == kombus.ssl
        assert connection.info() == kombus.info()


def test_our_classes_are_kombus_redis_classes_with_ours_first() -> None:
    assert Transport.Channel is ours.Channel and SentinelTransport.Channel is SentinelChannel
    assert ours.Channel.QoS is QoS and SentinelChannel.QoS is QoS
    assert issubclass(ours.Channel, kombu_redis.Channel) and issubclass(SentinelChannel, kombu_redis.SentinelChannel)
    assert issubclass(QoS, kombu_redis.QoS) and issubclass(SentinelTransport, kombu_redis.SentinelTransport)


@pytest.fixture
def app_for() -> Iterator[Any]:
    apps: list[Celery] = []

    def make(url: str) -> Celery:
        apps.append(make_app("svc", url))
        return apps[-1]

    yield make
    for app in apps:
        app.close()


def test_a_sentinel_url_picks_the_sentinel_transport_and_names_the_master(app_for: Any) -> None:
    with app_for(SENTINEL_URL).connection_for_write() as connection:
        assert type(connection.transport) is SentinelTransport
        assert connection.transport.Channel is SentinelChannel
        assert connection.transport_options["master_name"] == "mymaster"
        assert connection.ssl is False


@pytest.mark.parametrize(
    ("url", "broker_class"),
    [("redis://127.0.0.1:1/0", "Redis"), (SENTINEL_URL, "RedisSentinel")],
)
def test_flower_finds_its_broker_page_for_the_apps_broker(app_for: Any, url: str, broker_class: str) -> None:
    from flower.utils.broker import Broker  # type: ignore[import-untyped]

    with app_for(url).connection() as connection:
        broker = Broker(connection.as_uri(include_password=True), broker_options=connection.transport_options)
        assert type(broker).__name__ == broker_class


def test_the_apps_own_transport_setting_wins(app_for: Any) -> None:
    app = app_for("redis://127.0.0.1:1/0")
    app.conf.broker_transport = "memory"

    with app.connection_for_write() as connection:
        assert type(connection.transport) is symbol_by_name("kombu.transport.memory:Transport")


@pytest.mark.integration
@pytest.mark.parametrize("open_connection", ["connection_for_write", "connection_for_read", "connection"])
def test_every_connection_of_the_app_runs_our_channel(app_for: Any, redis_url: str, open_connection: str) -> None:
    app = app_for(redis_url)

    with getattr(app, open_connection)() as connection:  # what `celery -A module ...` commands open
        channel = connection.default_channel
        assert type(connection.transport) is Transport
        assert type(channel) is ours.Channel and type(channel.qos) is QoS
        assert channel.visibility_timeout == VISIBILITY_TIMEOUT_S
        assert tuple(channel.priority_steps) == PRIORITY_STEPS


@pytest.mark.integration
def test_the_apps_producers_run_our_channel(app_for: Any, redis_url: str) -> None:
    app = app_for(redis_url)

    with app.producer_or_acquire() as producer, app.pool.acquire(block=True) as pooled:
        assert type(producer.channel) is ours.Channel
        assert type(pooled.default_channel) is ours.Channel


def test_a_connection_keeps_our_transport_when_it_fails_over_to_the_next_url() -> None:
    with Connection(f"{SENTINEL_URL.split('?')[0]}") as connection:
        assert type(connection.transport) is SentinelTransport

        connection.maybe_switch_next()

        assert connection.hostname == "127.0.0.1" and connection.port == 2
        assert type(connection.transport) is SentinelTransport


def test_kombus_pools_keep_our_connections_apart_from_plain_kombu_ones() -> None:
    url = "redis://127.0.0.1:1/0"
    with Connection(url) as ours_, kombu.Connection(url) as kombus, Connection(url) as ours_again:
        assert pools.connections[ours_] is pools.connections[ours_again]
        assert pools.connections[ours_] is not pools.connections[kombus]
        assert type(ours_.clone()) is Connection
