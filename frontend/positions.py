"""Where an item stands, for `search`: how many entries come before it in its stream, and how many messages are
ahead of a request in its Celery queue. Both walk long structures, so both run as loops of bounded script steps
(no more than STEP entries or messages per call): Redis serves its other
clients between the steps, however long the stream or the queue. Under concurrent writes the answer is as of
the walk, as any position is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from scalablejob.store.lua import lua_script
from scalablejob.store.sink import as_text, index_of, stream_id

STEP = 500  # entries or messages looked at per script call: about half a millisecond of Redis time (bench)
MAX_POSITION_CALLS = 10_000  # a queue pushed to faster than it can be walked: give up (None) rather than loop on


class Positions:
    """Bounded walks of one Redis for `search`."""

    def __init__(self, redis: aioredis.Redis, step: int = STEP) -> None:
        self.redis = redis
        self.step = step
        self._count = redis.register_script(lua_script("status_count_before.lua", "scalablejob.frontend"))
        self._find = redis.register_script(lua_script("status_position.lua", "scalablejob.frontend"))

    async def entries_before(self, stream: str, index: int) -> int:
        """How many entries of `stream` have an index below `index`: counted from the nearer end of the stream."""
        try:
            info: Any = await self.redis.xinfo_stream(stream)
        except ResponseError:  # no such key
            return 0
        first, last = info.get("first-entry"), info.get("last-entry")
        if not first or not last:
            return 0
        first_index, last_index = index_of(first[0]), index_of(last[0])
        if index - first_index <= last_index - index:
            return await self._count_range(stream, "XRANGE", "-", f"({stream_id(index)}")
        # from the end: the entries from `index` up to the last one seen now, taken from the length seen with it
        return int(info["length"]) - await self._count_range(stream, "XREVRANGE", as_text(last[0]), stream_id(index))

    async def _count_range(self, stream: str, command: str, start: str, end: str) -> int:
        total = 0
        while True:
            count, last_id = await self._count(keys=[stream], args=[command, start, end, self.step])
            total += int(count)
            if int(count) < self.step:
                return total
            start = f"({as_text(last_id)}"

    async def ahead_of(self, lists: Sequence[str], request_id: str) -> int | None:
        """Messages ahead of the request's in a Celery queue's `lists` (most urgent first; 0: it goes next), or None
        when it is not waiting there (taken by a worker, or gone)."""
        needle, cursor = json.dumps(request_id), [1, -1]
        for _ in range(MAX_POSITION_CALLS):
            reply: Any = await self._find(keys=list(lists), args=[needle, *cursor, self.step])
            if int(reply[0]) == 1:
                return int(reply[1])
            if int(reply[0]) == -1:
                return None
            cursor = [int(reply[1]), int(reply[2])]
        return None
