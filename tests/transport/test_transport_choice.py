"""Every broker connection of the service's Celery app (workers, producers, `celery -A` commands) runs scalablejob's
transport: the plain one for redis:// and rediss:// (with TLS and verified certificates), the Sentinel one for a
Sentinel URL; another broker stays kombu's choice."""

from __future__ import annotations

from collections.abc import Iterator
from ssl import CERT_NONE, CERT_REQUIRED
from typing import Any

import pytest
from celery import Celery
from kombu.transport import redis as kombu_redis
from kombu.utils.imports import symbol_by_name

from scalablejob.api.celery_app import VISIBILITY_TIMEOUT_S, make_app
from scalablejob.store.queues import PRIORITY_STEPS
from scalablejob.transport import kombu_redis as ours
from scalablejob.transport.kombu_redis import QoS, SentinelChannel, SentinelTransport, Transport, transport_for

SENTINEL_URL = "sentinel://127.0.0.1:1;sentinel://127.0.0.1:2/0?master=mymaster"  # nothing is asked of it


@pytest.mark.parametrize(
    ("url", "transport", "options"),
    [
        ("redis://127.0.0.1:6379/0", Transport, {}),
        ("redis://:secret@127.0.0.1:6379/3", Transport, {}),
        ("redis://127.0.0.1:1/0;redis://127.0.0.1:2/0", Transport, {}),
        ("rediss://127.0.0.1:6380/0", Transport, {"ssl": {"ssl_cert_reqs": CERT_REQUIRED}}),
        ("sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380/0", SentinelTransport, {}),
        ("memory://", None, {}),
        ("amqp://guest@localhost//", None, {}),
        ("localhost", None, {}),
    ],
)
def test_transport_for_picks_ours_for_each_redis_scheme(
    url: str, transport: type | None, options: dict[str, Any]
) -> None:
    chosen, implied = transport_for(url)

    assert (chosen and symbol_by_name(chosen)) == transport
    assert implied == options


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


def test_a_rediss_url_gets_tls_with_verified_certificates(app_for: Any) -> None:
    with app_for("rediss://127.0.0.1:1/0").connection_for_write() as connection:
        assert type(connection.transport) is Transport
        assert connection.ssl == {"ssl_cert_reqs": CERT_REQUIRED}


def test_the_apps_own_ssl_settings_win_over_what_the_scheme_implies(app_for: Any) -> None:
    app = app_for("rediss://127.0.0.1:1/0")
    app.conf.broker_use_ssl = {"ssl_cert_reqs": CERT_NONE}

    with app.connection_for_write() as connection:
        assert connection.ssl == {"ssl_cert_reqs": CERT_NONE}


def test_the_apps_own_transport_setting_wins(app_for: Any) -> None:
    app = app_for("redis://127.0.0.1:1/0")
    app.conf.broker_transport = "redis"

    with app.connection_for_write() as connection:
        assert type(connection.transport) is kombu_redis.Transport


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

    with app.producer_or_acquire() as producer:
        assert type(producer.channel) is ours.Channel


def test_a_connection_keeps_our_transport_when_it_fails_over_to_the_next_url() -> None:
    with ours.Connection("rediss://127.0.0.1:1/0;rediss://127.0.0.1:2/0") as connection:
        assert type(connection.transport) is Transport

        connection.maybe_switch_next()

        assert connection.hostname == "127.0.0.1" and connection.port == 2
        assert type(connection.transport) is Transport
        assert connection.ssl == {"ssl_cert_reqs": CERT_REQUIRED}
