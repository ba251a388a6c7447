"""Redis connections for kombu on which a refusal for now is a lost connection.

A broker whose disk is full refuses every write, and even PING, with MISCONF (a failed-over one says READONLY, a
full one OOM). kombu and Celery take such a reply to BRPOP, to the health check of a subscription or of a new
connection, as a fatal error, and the worker ends ("Unrecoverable error"). Yet Redis refused before it ran
anything, so nothing was done: the same command succeeds once the cause is gone, exactly as after a lost
connection, which kombu drops and Celery reconnects from (waiting while it fails). So on kombu's connections such
a reply is raised as a lost connection.
"""

from __future__ import annotations

from typing import Any, TypeVar

import redis
from redis.connection import AbstractConnection

from scalablejob.store.outage import is_outage

C = TypeVar("C", bound=AbstractConnection)


class BrokerRefusing(redis.ConnectionError):
    """The broker refused a command for now (MISCONF, READONLY, OOM...): as if the connection were lost."""


def refusals_as_lost(base: type[C] | None) -> type[C]:
    """A subclass of the connection class `base` whose refusals for now are BrokerRefusing."""
    assert base is not None, "kombu names no redis-py connection class: is redis-py installed?"

    class RefusalAsLostConnection(base):  # type: ignore[valid-type,misc]
        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().read_response(*args, **kwargs)
            except redis.ResponseError as exc:
                if is_outage(exc):
                    raise BrokerRefusing(str(exc)) from exc
                raise

    RefusalAsLostConnection.__name__ = RefusalAsLostConnection.__qualname__ = f"RefusalAsLost{base.__name__}"
    return RefusalAsLostConnection
