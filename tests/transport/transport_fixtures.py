"""Fixtures of the transport tests: kombu connections on scalablejob's transport (or kombu's own) to the test's
redis-server, a consumer on two queues, and a MONITOR log. Load with `pytest_plugins = ["transport_fixtures"]`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis
from transport_support import CommandLog, Consuming, unblock_all

from scalablejob.transport.kombu_redis import Transport


@pytest.fixture
def commands(redis_url: str) -> Iterator[CommandLog]:
    log = CommandLog(redis_url)
    yield log
    log.close()


@pytest.fixture
def connection(redis_url: str, redis_client: redis.Redis) -> Iterator[Connection]:
    """A kombu connection on scalablejob's transport."""
    with Connection(redis_url, transport=Transport) as connection:
        yield connection
        unblock_all(redis_client)


@pytest.fixture
def kombus_connection(redis_url: str, redis_client: redis.Redis) -> Iterator[Connection]:
    """A kombu connection on kombu's own Redis transport, to compare with."""
    with Connection(redis_url, transport=kombu_redis.Transport) as connection:
        yield connection
        unblock_all(redis_client)


@pytest.fixture
def consuming(connection: Connection) -> Consuming:
    return Consuming(connection)
