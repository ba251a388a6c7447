"""The queue limits of a service, kept in Redis next to its queues so that every writer applies the same ones.

Puts and appends are Lua scripts, and some writers (a worker, `scalablejob cancel`, a bare `JobClient`) have no
service config at hand; so each part that starts with the config (front end, worker) records the limits in one
hash, and the scripts read them from there in the same step as the write. Until a part has recorded them, the
defaults of scalablejob.model.config apply.
"""

from __future__ import annotations

from enum import Enum

import redis

from scalablejob.model import keys
from scalablejob.model.config import (
    DEFAULT_INPUT_MAX_LENGTH,
    DEFAULT_SINK_MAX_AGE_S,
    DEFAULT_SINK_MAX_LENGTH,
    QueueConfig,
)


class Limit(str, Enum):
    """A field of the limits hash, named like its QueueConfig attribute, with the default a script uses while the
    field is not set."""

    INPUT_MAX_LENGTH = "input_max_length"
    SINK_MAX_LENGTH = "sink_max_length"
    SINK_MAX_AGE_S = "sink_max_age_s"  # also how long a finished request's state (and its index) is kept

    @property
    def default(self) -> int:
        return _DEFAULTS[self]

    def of(self, queue: QueueConfig) -> int:
        """This limit's value in `queue`."""
        return int(getattr(queue, self.value))


_DEFAULTS = {
    Limit.INPUT_MAX_LENGTH: DEFAULT_INPUT_MAX_LENGTH,
    Limit.SINK_MAX_LENGTH: DEFAULT_SINK_MAX_LENGTH,
    Limit.SINK_MAX_AGE_S: DEFAULT_SINK_MAX_AGE_S,
}


def record_limits(client: redis.Redis, service: str, queue: QueueConfig) -> None:
    """Make `queue`'s limits the ones every writer of `service`'s queues applies from now on."""
    items: list[str | int] = [item for limit in Limit for item in (limit.value, limit.of(queue))]
    client.hset(keys.queue_limits(service), items=items)
