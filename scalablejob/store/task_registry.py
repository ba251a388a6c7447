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
from redis import asyncio as aioredis

from scalablejob.model import keys
from scalablejob.model.routing import TaskInfo, TaskRegistry, TaskType

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


class _Copy:
    """A copy of the registry and when it was read: due again once it is `ttl_s` old, or when asked to."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self.registry: TaskRegistry = {}
        self._read_at: float | None = None

    def due(self, fresh: bool) -> bool:
        return fresh or self._read_at is None or self._clock() - self._read_at >= self._ttl_s

    def keep(self, registry: TaskRegistry) -> TaskRegistry:
        self.registry, self._read_at = registry, self._clock()
        return registry


class RegistryCache:
    """A client's copy of the registry, read again once it is `ttl_s` old (or when asked to: an unknown name)."""

    def __init__(
        self, client: redis.Redis, service: str, *, ttl_s: float = REGISTRY_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._client = client
        self._service = service
        self._copy = _Copy(ttl_s, clock)

    def get(self, *, fresh: bool = False) -> TaskRegistry:
        if self._copy.due(fresh):
            return self._copy.keep(read_tasks(self._client, self._service))
        return self._copy.registry


class AsyncRegistryCache:
    """The same copy, read on redis.asyncio (the front end's puts never wait on a thread)."""

    def __init__(
        self, client: aioredis.Redis, service: str, *, ttl_s: float = REGISTRY_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._client = client
        self._service = service
        self._copy = _Copy(ttl_s, clock)

    async def get(self, *, fresh: bool = False) -> TaskRegistry:
        if self._copy.due(fresh):
            raw: Any = await self._client.hgetall(keys.task_registry(self._service))
            return self._copy.keep(decode_registry(raw))
        return self._copy.registry
