"""The output queue: one Redis Stream per service and front end whose entries carry `data` bytes and string `tags`.

Each entry's stream id is ``<index>-0``, where index comes from a counter bumped in the same Lua call,
so indexes are monotonic, never reused after a delete, and an entry is found by index with one XRANGE.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import redis

from scalablejob import keys


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


@dataclass(frozen=True)
class HashUpdate:
    """Fields to set in a hash (then expire it) in the same atomic step as an append."""

    key: str
    fields: Mapping[str, str | int | float]
    ttl_s: int


# KEYS: stream, counter[, hash[, input stream]]; ARGV: data, tags[, ttl, field, value, ...]. With a hash, the entry's
# index is stored in it as result_index, so a reader never sees a result whose request state is not final yet.
# A hash that no longer exists (expired, discarded) is left alone rather than recreated half-empty. With an input
# stream, the request (by the index in its hash) leaves it in the same step: never both finished and still waiting.
_APPEND = """
local index = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], index .. '-0', 'data', ARGV[1], 'tags', ARGV[2])
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'result_index', index, unpack(ARGV, 4))
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  local input = KEYS[4] and redis.call('HGET', KEYS[3], 'index')
  if input then redis.call('XDEL', KEYS[4], input .. '-0') end
end
return index
"""
_ROUTE_CACHE_SIZE = 1024  # request id -> front end, so a job's log lines cost no extra round trip


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
        self._counter = keys.frontend_sink_index_counter(service, self.frontend)
        self._append = client.register_script(_APPEND)

    def append(
        self, data: bytes, tags: Mapping[str, str], *, then: HashUpdate | None = None, input_stream: str | None = None
    ) -> int:
        """Append one entry and return its index; `then` updates a hash (a request's state) atomically with it,
        and the request leaves `input_stream` (its front end's input queue) in the same step."""
        entry_keys = [self.stream, self._counter]
        args: list[bytes | str | int | float] = [data, encode_tags(tags)]
        if then is not None:
            entry_keys += [then.key, *([input_stream] if input_stream else [])]
            args.append(then.ttl_s)
            for name, value in then.fields.items():
                args.extend((name, value))
        return int(self._append(keys=entry_keys, args=args))

    def read(self, start_index: int = 1, count: int = 100) -> list[SinkEntry]:
        """Up to `count` entries from `start_index` on, in order."""
        items: Any = self._redis.xrange(self.stream, min=f"{start_index}-0", max="+", count=count)
        return [decode_entry(sid, fields) for sid, fields in items]

    def get(self, index: int) -> SinkEntry | None:
        """The entry with this index, or None if it never existed or was deleted."""
        items: Any = self._redis.xrange(self.stream, min=f"{index}-0", max=f"{index}-0")
        return decode_entry(*items[0]) if items else None

    def last_index(self) -> int:
        """Index of the newest entry ever appended (0 if none): entries after it are new."""
        value: Any = self._redis.get(self._counter)
        return int(value or 0)

    def wait(self, after_index: int, block_ms: int, count: int = 100) -> list[SinkEntry]:
        """Entries after `after_index`, blocking up to `block_ms` until at least one arrives."""
        reply: Any = self._redis.xread({self.stream: f"{after_index}-0"}, count=count, block=max(1, block_ms))
        return [decode_entry(sid, fields) for _, items in reply or [] for sid, fields in items]

    def length(self) -> int:
        return int(self._redis.xlen(self.stream))


class RoutedSink(Sink):
    """The worker's sink: each entry goes to the output queue of the front end its request came from.

    The front end is read once per request from the request's state (`frontend`, set at put); requests without
    one belong to the service's own front end. Reads (`read`, `get`, ...) are those of the service's own sink.
    """

    def __init__(self, client: redis.Redis, service: str) -> None:
        super().__init__(client, service)
        self._sinks: dict[str, Sink] = {service: self}
        self._routes: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()  # query tasks run in threads

    def append(
        self, data: bytes, tags: Mapping[str, str], *, then: HashUpdate | None = None, input_stream: str | None = None
    ) -> int:
        """Append to the request's front end; an update that ends the request (sets finished_at) also takes it off
        that front end's input queue."""
        frontend = self.frontend_of(tags.get("requestId"))
        ends_request = then is not None and "finished_at" in then.fields
        leaving = keys.input_stream(self.service, frontend) if ends_request else input_stream
        return Sink.append(self._sink_for(frontend), data, tags, then=then, input_stream=leaving)

    def frontend_of(self, request_id: str | None) -> str:
        """The front end a request came from (cached); the service's own one when unknown."""
        if not request_id:
            return self.service
        with self._lock:
            if request_id in self._routes:
                self._routes.move_to_end(request_id)
                return self._routes[request_id]
        raw: Any = self._redis.hget(keys.request_state(self.service, request_id), "frontend")
        frontend = raw.decode() if raw else self.service
        with self._lock:
            self._routes[request_id] = frontend
            while len(self._routes) > _ROUTE_CACHE_SIZE:
                self._routes.popitem(last=False)
        return frontend

    def _sink_for(self, frontend: str) -> Sink:
        with self._lock:
            if frontend not in self._sinks:
                self._sinks[frontend] = Sink(self._redis, self.service, frontend=frontend)
            return self._sinks[frontend]
