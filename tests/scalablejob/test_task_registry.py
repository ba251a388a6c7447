"""The task registry: workers replace it whole, clients read it through a cache that a test's clock ages."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from scalablejob.model import keys
from scalablejob.model.routing import TaskInfo, TaskType
from scalablejob.store.task_registry import AsyncRegistryCache, RegistryCache, decode_registry, read_tasks, record_tasks

SERVICE = "svc"
TASKS = {"shout": TaskInfo(TaskType.QUERY, default=True), "train": TaskInfo(TaskType.COMMAND)}


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_recorded_tasks_read_back_as_they_were(client: fakeredis.FakeRedis) -> None:
    record_tasks(client, SERVICE, TASKS)

    assert read_tasks(client, SERVICE) == TASKS


def test_a_worker_replaces_the_registry_whole(client: fakeredis.FakeRedis) -> None:
    record_tasks(client, SERVICE, TASKS)

    record_tasks(client, SERVICE, {"count": TaskInfo(TaskType.QUERY)})  # a new version of the code
    assert read_tasks(client, SERVICE) == {"count": TaskInfo(TaskType.QUERY)}
    record_tasks(client, SERVICE, {})  # a worker without named tasks
    assert not client.exists(keys.task_registry(SERVICE))


def test_a_field_another_version_wrote_is_left_out() -> None:
    raw = {b"ok": b'{"type": "query", "default": false}', b"odd": b'{"type": "batch"}', b"bad": b"not json"}

    assert decode_registry(raw) == {"ok": TaskInfo(TaskType.QUERY)}


def test_the_cache_reads_again_only_once_its_copy_is_old_or_when_asked(client: fakeredis.FakeRedis) -> None:
    clock = Clock()
    cache = RegistryCache(client, SERVICE, ttl_s=1.0, clock=clock)
    assert cache.get() == {}

    record_tasks(client, SERVICE, TASKS)
    clock.now += 0.5
    assert cache.get() == {}  # still the copy it read
    assert cache.get(fresh=True) == TASKS  # an unknown name makes a client look again at once
    record_tasks(client, SERVICE, {})
    clock.now += 1.0
    assert cache.get() == {}


def test_the_front_ends_async_cache_reads_again_as_the_sync_one_does() -> None:
    server, clock = fakeredis.FakeServer(), Clock()
    client = fakeredis.FakeRedis(server=server)

    async def reads() -> list[object]:
        async with fakeredis.FakeAsyncRedis(server=server) as async_client:
            cache = AsyncRegistryCache(async_client, SERVICE, ttl_s=1.0, clock=clock)
            seen = [await cache.get()]
            record_tasks(client, SERVICE, TASKS)
            clock.now += 0.5
            seen += [await cache.get(), await cache.get(fresh=True)]
            record_tasks(client, SERVICE, {})
            clock.now += 1.0
            return [*seen, await cache.get()]

    assert asyncio.run(reads()) == [{}, {}, TASKS, {}]
