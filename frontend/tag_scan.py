"""Tag filters on a queue (`get` and `watch` with tags): the one matcher, run inside Redis in bounded steps.

An item matches when every filter tag is equal on it. The scan runs in a Lua script (tag_scan.lua) that looks at
no more than MAX_STEPS items per call and returns where it stopped, so a filter over a long queue is many short
calls between which Redis serves its other clients, never one call that holds it for the whole stream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from redis import asyncio as aioredis

from scalablejob.store.lua import lua_script
from scalablejob.store.sink import SinkEntry, as_text, decode_entry, index_of

MAX_STEPS = 500  # items looked at per script call: under a millisecond of Redis time (bench/filtered_reads.py)


def tag_needle(name: str, value: str) -> str:
    """How one tag reads inside the JSON that encode_tags writes: no other text can match it."""
    return f"{json.dumps(name)}:{json.dumps(value)}"


def needles(filters: Mapping[str, str]) -> list[str]:
    return [tag_needle(name, value) for name, value in sorted(filters.items())]


def matches(entry: SinkEntry, filters: Mapping[str, str]) -> bool:
    """The matcher of tag_scan.lua, for items read outside it."""
    return all(entry.tags.get(name) == value for name, value in filters.items())


def filter_key(filters: Mapping[str, str]) -> str:
    """A canonical text of a filter set: watchers with equal filters share a consumer group, others do not."""
    return json.dumps(dict(sorted(filters.items())), separators=(",", ":"))


class TagScan:
    """Filtered reads of one stream, each a loop of bounded script calls."""

    def __init__(self, redis: aioredis.Redis, stream: str, max_steps: int = MAX_STEPS) -> None:
        self.stream = stream
        self.max_steps = max_steps
        self._script = redis.register_script(lua_script("tag_scan.lua", "scalablejob.frontend"))

    async def scan(self, start_id: str, wanted: int, filters: Mapping[str, str]) -> tuple[list[SinkEntry], int]:
        """Up to `wanted` matching items from `start_id` on, and the index of the last item looked at (0: none)."""
        found: list[SinkEntry] = []
        start, last = start_id, 0
        while len(found) < wanted:
            args: list[str | int] = ["range", start, wanted - len(found), self.max_steps, *needles(filters)]
            items, last_id, at_end = await self._script(keys=[self.stream], args=args)
            found += _entries(items)
            if last_id:
                last, start = index_of(last_id), f"({as_text(last_id)}"
            if at_end:
                break
        return found, last

    async def take(
        self, group: str, consumer: str, wanted: int, filters: Mapping[str, str]
    ) -> tuple[list[SinkEntry], str | None]:
        """The group's next items for `consumer`, up to `wanted` that match, and the id of the last item passed
        (None if none was); the others are acknowledged for the group as they are passed. No items: the stream
        has no new ones."""
        last: str | None = None
        while True:
            args: list[str | int] = ["group", group, consumer, wanted, self.max_steps, *needles(filters)]
            items, last_id, at_end = await self._script(keys=[self.stream], args=args)
            last = as_text(last_id) if last_id else last
            if items or at_end:
                return _entries(items), last


def _entries(items: Any) -> list[SinkEntry]:
    """SinkEntries from the raw `{id, {field, value, ...}}` arrays a script returns."""
    return [decode_entry(sid, dict(zip(fields[::2], fields[1::2], strict=True))) for sid, fields in items]
