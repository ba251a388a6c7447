"""Observe: what the scaler reads from Redis on every pass (queue depths and every worker's published state)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import redis

from scalablejob.model.routing import service_queues
from scalablejob.store.presence import Presence, PresenceReader
from scalablejob.store.queues import queue_depth


@dataclass(frozen=True)
class Observation:
    """Queue depths and worker presence, as read in one pass."""

    queued: Mapping[str, int] = field(default_factory=dict)  # queue name -> messages waiting
    workers: Mapping[str, Presence] = field(default_factory=dict)  # node name -> presence, any host

    @property
    def total_queued(self) -> int:
        return sum(self.queued.values())

    def running(self, live: Collection[str]) -> int:
        """Tasks held by the live workers of the service (`live`: their names, as the scaler judged them by seeing
        their records change), on any host; stale fields are workers that are gone."""
        return sum(len(presence.held) for name, presence in self.workers.items() if name in live)


class MetricsSource(Protocol):
    def observe(self) -> Observation: ...


class RedisMetrics:
    """The real source: kombu's queue lists (all priorities) and the presence hash, a few round trips per pass."""

    def __init__(self, client: redis.Redis, service: str) -> None:
        self._client = client
        self._queues = service_queues(service)
        self._presence = PresenceReader(client, service)

    def observe(self) -> Observation:
        queued = {queue: queue_depth(self._client, queue) for queue in self._queues}
        return Observation(queued, self._presence.read())
