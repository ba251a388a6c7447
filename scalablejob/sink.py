"""The output queue: one Redis Stream per service and front end whose entries carry `data` bytes and string `tags`.

Each entry's stream id is ``<index>-0``, where index comes from a counter bumped in the same Lua call,
so indexes are monotonic, never reused after a delete, and an entry is found by index with one XRANGE.
A request's final entry is appended together with the end of its state: `scalablejob.state` owns that step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import redis

from scalablejob import keys
from scalablejob.lua import lua_script


class EntryType(str, Enum):
    """What a sink entry is: the `type` tag."""

    RESULT = "result"
    LOG = "log"
    PROGRESS = "progress"
    ERROR = "error"


@dataclass(frozen=True)
class SinkEntry:
    """One entry of the output queue."""

    index: int
    data: bytes
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def request_id(self) -> str | None:
        return self.tags.get("requestId")

    @property
    def type(self) -> str | None:
        return self.tags.get("type")

    @property
    def is_final(self) -> bool:
        """The entry that ends its request: a `result` or an `error`; nothing of it comes after."""
        return self.type in (EntryType.RESULT.value, EntryType.ERROR.value)


def stream_id(index: int) -> str:
    """The stream entry id of the item with this index (output and input queues alike)."""
    return f"{index}-0"


def entry_tags(request_id: str, task_type: str, entry_type: EntryType, **extra: object) -> dict[str, str]:
    """The tags every sink entry carries, plus entry-specific ones (exitCode, stream, ...)."""
    tags = {"requestId": request_id, "taskType": task_type, "type": entry_type.value}
    tags.update({key: str(value) for key, value in extra.items()})
    return tags


def encode_tags(tags: Mapping[str, str]) -> bytes:
    return json.dumps({str(k): str(v) for k, v in tags.items()}, separators=(",", ":")).encode()


def decode_entry(stream_id: bytes | str, fields: Mapping[bytes, bytes]) -> SinkEntry:
    """A SinkEntry from one raw XRANGE/XREAD item."""
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    raw_tags = fields.get(b"tags") or b"{}"
    return SinkEntry(index=int(sid.split("-", 1)[0]), data=fields.get(b"data", b""), tags=json.loads(raw_tags))


class Sink:
    """Reads and appends a service's output queue. The client must not decode responses (data is bytes)."""

    def __init__(self, client: redis.Redis, service: str, *, frontend: str | None = None) -> None:
        self._redis = client
        self.service = service
        self.frontend = frontend or service  # each front end of a service has its own output queue
        self.stream = keys.frontend_sink_stream(service, self.frontend)
        self.counter = keys.frontend_sink_index_counter(service, self.frontend)
        # state_finish.lua makes the same append (INCR, then XADD) together with the end of a request state
        self._append = client.register_script(lua_script("sink_append.lua"))

    def append(self, data: bytes, tags: Mapping[str, str]) -> int:
        """Append one entry and return its index. A request's final entry goes through `RequestStore.finish`
        instead, which ends the request's state in the same step."""
        return int(self._append(keys=[self.stream, self.counter], args=[data, encode_tags(tags)]))

    def read(self, start_index: int = 1, count: int = 100) -> list[SinkEntry]:
        """Up to `count` entries from `start_index` on, in order."""
        items: Any = self._redis.xrange(self.stream, min=stream_id(start_index), max="+", count=count)
        return [decode_entry(sid, fields) for sid, fields in items]

    def get(self, index: int) -> SinkEntry | None:
        """The entry with this index, or None if it never existed or was deleted."""
        items: Any = self._redis.xrange(self.stream, min=stream_id(index), max=stream_id(index))
        return decode_entry(*items[0]) if items else None

    def last_index(self) -> int:
        """Index of the newest entry ever appended (0 if none): entries after it are new."""
        value: Any = self._redis.get(self.counter)
        return int(value or 0)

    def wait(self, after_index: int, block_ms: int, count: int = 100) -> list[SinkEntry]:
        """Entries after `after_index`, blocking up to `block_ms` until at least one arrives."""
        reply: Any = self._redis.xread({self.stream: stream_id(after_index)}, count=count, block=max(1, block_ms))
        return [decode_entry(sid, fields) for _, items in reply or [] for sid, fields in items]

    def length(self) -> int:
        return int(self._redis.xlen(self.stream))
