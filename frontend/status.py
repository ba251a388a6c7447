"""What `attributes` and `search` tell about a queue and an item: lengths, depth, workers, state and position."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from scalablejob.frontend.positions import Positions
from scalablejob.frontend.queues import InputQueue, Queue, SinkQueue
from scalablejob.model import keys
from scalablejob.model.errors import QueueNotFound
from scalablejob.model.freshness import ChangeTracker
from scalablejob.model.routing import TaskType, queue_for
from scalablejob.store.limits import Limit
from scalablejob.store.presence import STALE_AFTER_S, decode_presence
from scalablejob.store.queues import priority_lists
from scalablejob.store.sink import as_text, stream_id
from scalablejob.store.state import RequestState, RequestStatus


class WorkerCensus:
    """How many live workers serve the service: the fields of the hash the workers publish their presence in
    (scalablejob.store.presence), read in one round trip rather than asked of the workers by broadcast. A worker is live
    while this front end sees its record change (scalablejob.model.freshness, on this process's monotonic clock): its
    heartbeat is another host's wall time, never compared with ours."""

    def __init__(self, redis: aioredis.Redis, service: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.service = service
        self._clock = clock
        self._changes = ChangeTracker()

    async def count(self) -> int:
        raw: Any = await self.redis.hgetall(keys.worker_presence(self.service))
        now = self._clock()
        workers = decode_presence(raw)
        self._changes.observe({name: presence.token for name, presence in workers.items()}, now)
        return sum(1 for name in workers if self._changes.is_fresh(name, now, STALE_AFTER_S))


class Inspector:
    """Answers `attributes` and `search` for the queues of the front ends of one service."""

    def __init__(self, redis: aioredis.Redis, census: WorkerCensus, max_payload_bytes: int) -> None:
        self.redis = redis
        self.census = census
        self.max_payload_bytes = max_payload_bytes
        self.positions = Positions(redis)

    async def attributes(self, queue: Queue) -> dict[str, str]:
        """`stream.*` of the queue and its limits under the cloud's names (`meta.maxPayloadBytes`,
        `stream.approxMaxLength`; the output queue's `stream.maxAgeSeconds` is ours), plus the depth of the
        service's Celery queues and its live workers."""
        service = queue.front_end.service
        attrs = {**queue.meta(), **await queue.stream_attributes()}
        attrs["meta.maxPayloadBytes"] = str(self.max_payload_bytes)
        limits = {"stream.approxMaxLength": Limit.INPUT_MAX_LENGTH}
        if not isinstance(queue, InputQueue):
            limits = {"stream.approxMaxLength": Limit.SINK_MAX_LENGTH, "stream.maxAgeSeconds": Limit.SINK_MAX_AGE_S}
        recorded: Any = await self.redis.hmget(keys.queue_limits(service), [limit.value for limit in limits.values()])
        for (name, limit), value in zip(limits.items(), recorded, strict=True):
            attrs[name] = str(int(value or limit.default))
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_type in TaskType:
                for key in priority_lists(queue_for(service, task_type)):
                    pipe.llen(key)
            lengths: list[Any] = await pipe.execute()
        per_type = len(lengths) // len(TaskType)
        for number, task_type in enumerate(TaskType):
            depth = sum(int(n) for n in lengths[number * per_type : (number + 1) * per_type])
            attrs[f"queue.depth.{task_type.value}"] = str(depth)
        attrs["queue.depth"] = str(sum(int(n) for n in lengths))
        attrs["workers"] = str(await self.census.count())
        return attrs

    async def search(self, queue: Queue, index: int) -> dict[str, Any]:
        if isinstance(queue, InputQueue):
            return await self._search_input(queue, index)
        if isinstance(queue, SinkQueue):
            return await self._search_sink(queue, index)
        raise QueueNotFound(f"queue {queue.name} cannot be searched")

    async def _search_input(self, queue: InputQueue, index: int) -> dict[str, Any]:
        """A request's state, whether still in the input queue, and its position among the waiting requests."""
        state = await queue.requests.at_index(index)
        if state is None:
            raise QueueNotFound(f"no item with index {index} in queue {queue.name}")
        in_queue = await queue.get(index) is not None
        queued = state.status is RequestStatus.QUEUED
        position = await self._position_of(queue.front_end.service, state) if queued else None
        return {
            "index": index, "requestId": state.request_id, "taskType": state.task_type,
            "state": state.status.value, "inQueue": in_queue, "position": position,
            "progress": state.progress, "message": state.message, "worker": state.worker,
            "queuedAt": state.queued_at, "startedAt": state.started_at, "finishedAt": state.finished_at,
            "exitCode": state.exit_code, "error": state.error, "retries": state.retries,
            "cancelRequested": state.cancel_requested, "resultIndex": state.result_index,
        }  # fmt: skip

    async def _position_of(self, service: str, state: RequestState) -> int | None:
        """Messages ahead of the request in its Celery queue (0: the next one a worker takes), or None."""
        lists = priority_lists(queue_for(service, TaskType(state.task_type)))
        return await self.positions.ahead_of(lists, state.request_id)

    async def _search_sink(self, queue: SinkQueue, index: int) -> dict[str, Any]:
        """An output item: its tags, how many items are before it, and which watchers hold it uncommitted."""
        entry = await queue.get(index)
        if entry is None:
            raise QueueNotFound(f"no item with index {index} in queue {queue.name}")
        before = await self.positions.entries_before(queue.stream, index)
        # another front end's request is unknown to this one's: nothing about it may show here
        state = await queue.requests.get(entry.request_id) if entry.request_id else None
        holders = await self._delivered(queue, index)
        return {
            "index": index, "requestId": entry.request_id, "type": entry.type, "tags": dict(entry.tags),
            "state": "delivered" if holders else "waiting", "position": int(before), "deliveredTo": holders,
            "requestState": None if state is None else state.status.value,
        }  # fmt: skip

    async def _delivered(self, queue: Queue, index: int) -> list[dict[str, str]]:
        """The watchers (group, consumer) that were sent this item and have not committed it."""
        try:
            groups: Any = await self.redis.xinfo_groups(queue.stream)
        except ResponseError:  # no such key: nothing was ever put
            return []
        holders = []
        for group in groups:
            name = group["name"]
            pending: Any = await self.redis.xpending_range(queue.stream, name, stream_id(index), stream_id(index), 1)
            holders += [{"group": as_text(name), "consumer": as_text(p["consumer"])} for p in pending]
        return holders
