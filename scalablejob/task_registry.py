"""The task registry: a service's named tasks (@job.task) in Redis, written by its workers, read by every put.

The one owner of keys.task_registry: a hash of task name -> {"type": "query" | "command", "default": bool}. A
worker replaces it as a whole when it starts, from the Job it loaded, so a renamed or removed task does not linger.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from scalablejob import keys
from scalablejob.routing import TaskInfo, TaskRegistry, TaskType

REGISTRY_TTL_S = 1.0  # how long a client trusts what it read: a new worker's tasks are known within this


def encode_info(info: TaskInfo) -> str:
    return json.dumps({"type": info.task_type.value, "default": info.default})


def decode_registry(raw: Mapping[bytes, bytes]) -> dict[str, TaskInfo]:
    """The registry from its hash; a field that does not decode (another version wrote it) is left out."""
    registry = {}
    for name, value in raw.items():
        try:
            fields = json.loads(value)
            registry[name.decode()] = TaskInfo(TaskType(fields["type"]), bool(fields.get("default", False)))
        except (ValueError, KeyError, TypeError):
            continue
    return registry


def record_tasks(client: redis.Redis, service: str, tasks: Mapping[str, TaskInfo]) -> None:
    """Replace the service's registry with `tasks` in one step (MULTI), so no reader sees half of it."""
    key = keys.task_registry(service)
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if tasks:
            pipe.hset(key, mapping={name: encode_info(info) for name, info in tasks.items()})
        pipe.execute()


def read_tasks(client: redis.Redis, service: str) -> dict[str, TaskInfo]:
    raw: Any = client.hgetall(keys.task_registry(service))
    return decode_registry(raw)


class RegistryCache:
    """A client's copy of the registry, read again once it is `ttl_s` old (or when asked to: an unknown name)."""

    def __init__(
        self, client: redis.Redis, service: str, *, ttl_s: float = REGISTRY_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._client = client
        self._service = service
        self._ttl_s = ttl_s
        self._clock = clock
        self._registry: TaskRegistry = {}
        self._read_at: float | None = None

    def get(self, *, fresh: bool = False) -> TaskRegistry:
        now = self._clock()
        if fresh or self._read_at is None or now - self._read_at >= self._ttl_s:
            self._registry = read_tasks(self._client, self._service)
            self._read_at = now
        return self._registry
