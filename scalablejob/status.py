"""What `scalablejob status` shows, read from Redis in one place: queues, scaler, workers, recent decisions."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from scalablejob import keys
from scalablejob.celery_app import service_queues
from scalablejob.presence import Presence, read_presence
from scalablejob.queues import queue_depth

RECENT_DECISIONS = 5


@dataclass(frozen=True)
class ServiceStatus:
    """A snapshot of one service, as its parts last reported it."""

    service: str
    queues: dict[str, int]
    scalers: list[dict[str, Any]]
    workers: list[Presence]
    decisions: list[dict[str, Any]]
    init_failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    taken_at: float = 0.0


def read_status(client: redis.Redis, service: str, now: float | None = None) -> ServiceStatus:
    return ServiceStatus(
        service=service,
        queues={queue: queue_depth(client, queue) for queue in service_queues(service)},
        scalers=_scalers(client, service),
        workers=sorted(read_presence(client, service).values(), key=lambda presence: presence.name),
        decisions=[json.loads(raw) for raw in _lrange(client, keys.scaler_decisions(service), RECENT_DECISIONS)],
        init_failures={
            name.decode(): json.loads(raw) for name, raw in _hgetall(client, keys.init_failures(service)).items()
        },
        taken_at=time.time() if now is None else now,
    )


def _scalers(client: redis.Redis, service: str) -> list[dict[str, Any]]:
    """The last report of each host's scaler (one per host)."""
    found: Any = client.scan_iter(match=keys.scaler_status(service, "*"), count=100)
    reports = []
    for key in sorted(found):
        raw = _hgetall(client, key)
        reports.append({"host": key.decode().rsplit(":", 1)[1], **{k.decode(): v.decode() for k, v in raw.items()}})
    return reports


def _hgetall(client: redis.Redis, key: str | bytes) -> dict[bytes, bytes]:
    raw: Any = client.hgetall(key)
    return dict(raw)


def _lrange(client: redis.Redis, key: str, count: int) -> list[bytes]:
    raw: Any = client.lrange(key, 0, count - 1)
    return list(raw)
