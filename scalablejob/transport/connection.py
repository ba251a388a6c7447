"""Which transport a broker connection runs on: kombu's Connection, resolving kombu's Redis transports to ours.

The service's Celery app makes every connection with this Connection (through `AMQP`, its `amqp` class), so
workers, producers, `celery -A` commands, Flower and the scaler's recovery all run transport.kombu_redis; so do the
connections of its pools (kombu's pool would make plain kombu ones). The transport keeps kombu's names (`redis`,
`rediss`, `sentinel`): URLs print, pickle and fail over as kombu's do, TLS settings are kombu's, and Flower picks its
broker page by the URL's scheme; only the class each name resolves to is ours.
"""

from __future__ import annotations

from typing import Any

import kombu
from celery.app import amqp as celery_amqp
from kombu import connection as kombu_connection
from kombu.transport import redis as kombu_redis
from kombu.utils.collections import HashedSeq

from scalablejob.transport.kombu_redis import SentinelTransport, Transport
from scalablejob.upstream.check import require

require("kombu", kombu.Connection, ("get_transport_cls", "__eqhash__", "Pool", "_info"))
require("kombu", kombu_connection.ConnectionPool, ("new",))
require("celery", celery_amqp.AMQP, ("Connection",))
OURS: dict[type, type] = {kombu_redis.Transport: Transport, kombu_redis.SentinelTransport: SentinelTransport}


class OurTransport:
    """A kombu Connection that resolves kombu's Redis transports to ours."""

    def get_transport_cls(self) -> Any:
        found = super().get_transport_cls()  # type: ignore[misc]
        return OURS.get(found, found)

    def __eqhash__(self) -> Any:
        """kombu's pools (kombu.pools) share the connections whose parameters are equal: one of another app in this
        process, on the same broker, must not hand out kombu's transport here, nor ours there."""
        return HashedSeq(Connection, *super().__eqhash__())  # type: ignore[misc]


class Connection(OurTransport, kombu.Connection):
    def Pool(self, limit: int | None = None, **kwargs: Any) -> ConnectionPool:
        return ConnectionPool(self, limit, **kwargs)


class PooledConnection(OurTransport, kombu_connection.PooledConnection):
    pass


class ConnectionPool(kombu_connection.ConnectionPool):
    """kombu's pool of connections, each of them on our transport."""

    def new(self) -> PooledConnection:
        return PooledConnection(self, **dict(self.connection._info(resolve=False)))


class AMQP(celery_amqp.AMQP):
    """Celery's AMQP helper, making its connections with the Connection above."""

    Connection = Connection
    BrokerConnection = Connection
