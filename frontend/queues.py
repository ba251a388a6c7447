"""The two queues of a front end, on Redis: what put, get, commit, delete, truncate and attributes do to them.

Both are Redis Streams whose entry ids are ``<index>-0`` and whose entries carry `data` and `tags` (JSON):
- the output queue (sink) is the one the workers append results and logs to (scalablejob.store.sink);
- the input queue mirrors the front end's requests: a put does what `JobClient.put` does (routing by task or
  taskType, priority, request state, the Celery message), on redis.asyncio and in one script call, which also adds
  the request to this stream under the index it was given; the worker
  removes it when it appends the request's final entry. So the input queue holds the requests that are queued or
  running, and `stream.length` is their number.
Taking an item off the input queue (a get with auto delete, a commit, a delete, a truncate) withdraws the request:
it is flagged for cancellation, so a queued request never runs (its worker writes an `error` entry saying so) and
a running command is stopped. Taking an item off the output queue just deletes it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from scalablejob.api.client import REQUEST_ID_TAG, JobClient, Route, checked_request_id, new_request, normalize_tags
from scalablejob.frontend.auth import check_scope
from scalablejob.frontend.binding import FrontEnd
from scalablejob.frontend.deadline import within
from scalablejob.frontend.params import GetParams
from scalablejob.frontend.put_batch import ScriptBatch
from scalablejob.frontend.tag_scan import TagScan, matches
from scalablejob.model import keys
from scalablejob.model.errors import BrokerError, RequestError
from scalablejob.model.routing import resolve_task
from scalablejob.store.redis_url import parse_broker_url, wait_for_replicas_async
from scalablejob.store.sink import SinkEntry, append_script, as_text, decode_entry, index_of, stream_id
from scalablejob.store.state import FrontEndRequests, RequestState
from scalablejob.store.task_registry import AsyncRegistryCache

SCAN_CHUNK = 256
REMOVE_CHUNK = 1000
WAIT_SLICE_S = 1.0  # a long wait is cut into slices, so a closed connection is noticed within one
PUT_TIMEOUT_S = 5.0  # the broker's answer to a put, as redis-py's default socket timeout waits for any

Gone = Callable[[], Awaitable[bool]]


async def _never_gone() -> bool:
    return False


class _Wait:
    """A get's wait for items, cut into slices of WAIT_SLICE_S, so that a client that left is noticed."""

    def __init__(self, deadline: float, gone: Gone) -> None:
        self.deadline = deadline
        self.gone = gone
        self.sliced = False

    async def next_block_ms(self) -> int | None:
        """Milliseconds to block for now, or None (do not block) once the deadline passed or the client left."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.001 or (self.sliced and await self.gone()):
            return None
        self.sliced = True
        return max(1, int(min(remaining, WAIT_SLICE_S) * 1000))


def entries_of(items: Any) -> list[SinkEntry]:
    """SinkEntries from an XRANGE-shaped reply; entries deleted since (no fields) are left out."""
    return [decode_entry(sid, fields) for sid, fields in items or [] if fields]


class Queue:
    """One queue of one front end: reading and removing its items."""

    kind = "queue"

    def __init__(
        self, redis: aioredis.Redis, front_end: FrontEnd, name: str, stream: str, on_removed: Callable[[str], None]
    ) -> None:
        self.redis = redis
        self.front_end = front_end
        self.name = name
        self.stream = stream
        self._on_removed = on_removed
        self.tags = TagScan(redis, stream)
        self.requests = FrontEndRequests(redis, front_end.service, front_end.name)

    async def put(self, data: bytes, tags: Mapping[str, str]) -> tuple[int, str]:
        """Add one item; returns (index, requestId)."""
        raise NotImplementedError

    async def read(self, params: GetParams, gone: Gone = _never_gone) -> list[SinkEntry]:
        """Up to `length` items from `index` on (matching the filters), waiting up to `wait_s` for the first;
        a wait ends early, empty, once `gone` says the client went away."""
        waiting = _Wait(time.monotonic() + params.wait_s, gone)
        if params.filters:
            entries = await self._read_matching(params, waiting)
        else:
            entries = await self._read_plain(params, waiting)
        if params.auto_delete and entries:
            await self.remove([entry.index for entry in entries])
        return entries

    async def _read_plain(self, params: GetParams, waiting: _Wait) -> list[SinkEntry]:
        after = stream_id(max(params.index - 1, 0))
        while True:
            block = await waiting.next_block_ms()
            reply: Any = await self.redis.xread({self.stream: after}, count=params.length, block=block)
            entries = [entry for _, items in reply or [] for entry in entries_of(items)]
            if entries or block is None:
                return entries

    async def _read_matching(self, params: GetParams, waiting: _Wait) -> list[SinkEntry]:
        """Matching items from `index` on: the stored ones in bounded script steps (Redis serves other clients
        between them), then new ones as they come, until one matches or the wait ends."""
        start = max(params.index, await self._first_possible(params.filters.get(REQUEST_ID_TAG)))
        found, after = await self.tags.scan(stream_id(start), params.length, params.filters)
        after = max(after, start - 1, 0)
        while not found:
            block = await waiting.next_block_ms()
            if block is None:
                break
            reply: Any = await self.redis.xread({self.stream: stream_id(after)}, count=SCAN_CHUNK, block=block)
            for entry in [entry for _, items in reply or [] for entry in entries_of(items)]:
                after = max(after, entry.index)
                if matches(entry, params.filters):
                    found.append(entry)
        return found[: params.length]

    async def _first_possible(self, request_id: str | None) -> int:
        """The lowest index an item of this request can have here, as its state tells (0: unknown, or another
        front end's request)."""
        state = await self.requests.get(request_id) if request_id else None
        return 0 if state is None else self._firstindex_of(state)

    def _firstindex_of(self, state: RequestState) -> int:
        return 0

    async def get(self, index: int) -> SinkEntry | None:
        items: Any = await self.redis.xrange(self.stream, min=stream_id(index), max=stream_id(index))
        entries = entries_of(items)
        return entries[0] if entries else None

    async def remove(self, indexes: Sequence[int]) -> int:
        """Commit or delete items: they leave the queue (unknown indexes are ignored, so a retry is harmless)."""
        removed = 0
        for start in range(0, len(indexes), REMOVE_CHUNK):
            removed += await self._remove_chunk(indexes[start : start + REMOVE_CHUNK])
        self._on_removed(self.stream)
        return removed

    async def _remove_chunk(self, indexes: Sequence[int]) -> int:
        return int(await self.redis.xdel(self.stream, *[stream_id(index) for index in indexes]))

    async def truncate(self, below: int) -> int:
        """Delete every item whose index is below `below`."""
        removed, start = 0, "-"
        while True:
            items: Any = await self.redis.xrange(self.stream, start, f"({stream_id(below)}", count=REMOVE_CHUNK)
            if not items:
                break
            removed += await self._remove_chunk([index_of(sid) for sid, _ in items])
            start = f"({as_text(items[-1][0])}"
        self._on_removed(self.stream)
        return removed

    async def stream_attributes(self) -> dict[str, str]:
        """`stream.*` attributes; `stream.lastEntry` is the last index given, so truncate(lastEntry + 1) empties it."""
        try:
            info: Any = await self.redis.xinfo_stream(self.stream)
        except ResponseError:  # no such key: nothing was ever put
            return {"stream.length": "0", "stream.firstEntry": "0", "stream.lastEntry": "0"}
        first = info.get("first-entry")
        return {
            "stream.length": str(info["length"]),
            "stream.firstEntry": str(index_of(first[0])) if first else "0",
            "stream.lastEntry": str(index_of(info["last-generated-id"])),
        }

    def meta(self) -> dict[str, str]:
        return {
            "meta.name": self.name, "meta.queue": self.kind, "meta.frontend": self.front_end.name,
            "meta.service": self.front_end.service,
        }  # fmt: skip


class SinkQueue(Queue):
    """The output queue: results, logs and progress of the front end's requests, and whatever clients put."""

    kind = "sink"

    def __init__(
        self, redis: aioredis.Redis, client: JobClient, front_end: FrontEnd, on_removed: Callable[[str], None]
    ) -> None:
        super().__init__(redis, front_end, front_end.sink_name, client.sink.stream, on_removed)
        self._sink = client.sink  # names the keys; the append runs here, on redis.asyncio
        self._append = redis.register_script(append_script())

    def _firstindex_of(self, state: RequestState) -> int:
        """Every output of a request comes after the output queue's last index when it was put (`sink_from`)."""
        return state.sink_from + 1

    async def put(self, data: bytes, tags: Mapping[str, str]) -> tuple[int, str]:
        """Append an item as given; it gets a requestId tag if it has none."""
        clean = normalize_tags(tags)
        clean[REQUEST_ID_TAG] = checked_request_id(clean)
        index = await self._append(*self._sink.append_call([(data, clean)]))
        return int(index), clean[REQUEST_ID_TAG]


class InputQueue(Queue):
    """The input queue: the front end's requests that are queued or running."""

    kind = "input"

    def __init__(
        self, redis: aioredis.Redis, client: JobClient, front_end: FrontEnd, on_removed: Callable[[str], None],
        put_batch: ScriptBatch | None = None,
    ) -> None:  # fmt: skip
        """`put_batch`: what a put is enqueued through (default: `redis`, each put on its own), with the other puts
        of the same turn of the loop; its client may have no socket timeout, the put's deadline (PUT_TIMEOUT_S)
        standing for it. With ?replicas=N a put goes through `redis` on its own, as the WAIT that follows it must run
        on its connection (WAIT counts the writes of its own connection)."""
        stream = keys.input_stream(front_end.service, front_end.name)
        super().__init__(redis, front_end, front_end.name, stream, on_removed)
        self._client = client
        self._tasks = AsyncRegistryCache(redis, front_end.service)
        self._replicated = parse_broker_url(client.broker).replicas > 0  # read once, not per put
        service, name = front_end.service, front_end.name
        if self._replicated or put_batch is None:
            self._put_requests = FrontEndRequests(redis, service, name)
        else:
            self._put_requests = FrontEndRequests(put_batch.redis, service, name, put_batch.run)

    def _firstindex_of(self, state: RequestState) -> int:
        """A request's input item has the request's index."""
        return state.index

    async def put(self, data: bytes, tags: Mapping[str, str]) -> tuple[int, str]:
        """Enqueue a request routed by its task or taskType tag, if this front end may submit that task type (a put
        outside its scope writes nothing): what JobClient.put does, on the event loop, in one script call."""
        clean = normalize_tags(tags)
        route = await self._route(clean)
        check_scope(route[0].value, self.front_end.task_types, self.front_end.name)
        request = new_request(self._client.app, self.front_end.service, self.front_end.name, data, clean, route)
        try:
            index = await within(self._put_requests.create(request), PUT_TIMEOUT_S)
        except TimeoutError:
            raise BrokerError(f"could not enqueue request {request.request_id}: the broker did not answer within "
                              f"{PUT_TIMEOUT_S:g} s") from None  # fmt: skip
        if not self._replicated:
            return index, request.request_id
        try:
            await wait_for_replicas_async(self.redis, self._client.broker)  # with ?replicas=N: only once replicated
        except Exception as exc:
            await self.requests.discard(request.request_id, index)
            raise BrokerError(f"could not enqueue request {request.request_id}: {exc}") from exc
        return index, request.request_id

    async def _route(self, tags: Mapping[str, str]) -> Route:
        """Where the request goes, from the cached task registry, else (a name it does not know) a fresh one."""
        default, service = self._client.default_task_type, self.front_end.service
        try:
            return resolve_task(tags, await self._tasks.get(), default, service)
        except RequestError:
            return resolve_task(tags, await self._tasks.get(fresh=True), default, service)

    async def _remove_chunk(self, indexes: Sequence[int]) -> int:
        """Withdraw the requests behind the items found in this queue: only they can be this front end's."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.xrange(self.stream, min=stream_id(index), max=stream_id(index))
            replies: list[Any] = await pipe.execute()
        return await self.requests.withdraw([entry for reply in replies for entry in entries_of(reply)])
