"""The output queue: one Redis Stream per service and front end whose entries carry `data` bytes and string `tags`.

Each entry's stream id is ``<index>-0``, where index comes from a counter bumped in the same Lua call,
so indexes are monotonic, never reused after a delete, and an entry is found by index with one XRANGE.
A request's final entry is appended together with the end of its state: `scalablejob.store.state` owns that step.

Retention: every append keeps the queue to the service's limits (scalablejob.store.limits) in the same script.

Its maximum length never costs a request its final entry (result or error) before a client has read and deleted
it, or it has aged out: XADD's own `MAXLEN` would evict the oldest entries whatever they are, so one job flooding
its log would push out the unread results of every other request. Past the length, the oldest entries that are not
final go instead (XDEL), found from a mark that only moves forward, so each entry is looked at once. A final entry
is one that ended its request (it carries the field `final`, which only RequestStore.finish's script writes), not
any entry tagged type=result: a client may post those itself. A queue of unread results alone may be longer than
its maximum length; it then keeps no log lines until results are read or age out. A job's own log is capped in the
worker too (log_cap_bytes, its entries counted with LOG_ENTRY_OVERHEAD_BYTES each).

Its maximum age needs `XTRIM MINID`, which trims by stream id; but ids are indexes, not times, so each queue keeps a
small clock: a sorted set of checkpoints, an index scored by the time it was appended. An append records itself as a
checkpoint when the newest one is at least max_age / CHECKPOINTS_PER_MAX_AGE old, and then trims every entry up to
the newest checkpoint that is max_age old, dropping that checkpoint and the older ones. So the clock holds about
CHECKPOINTS_PER_MAX_AGE members, a trim runs at most once per step (max_age / CHECKPOINTS_PER_MAX_AGE), no entry
younger than max_age is trimmed, and none outlives it by more than two steps and the gaps between appends (a queue
nobody appends to keeps what it has, but does not grow). The time is the writer's, passed in (a 6.2 script reads no
clock); clocks that disagree shift the trim by as much.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import redis

from scalablejob.model import keys
from scalablejob.store.limits import Limit
from scalablejob.store.lua import lua_script

CHECKPOINTS_PER_MAX_AGE = 100  # the clock's size, and how finely the maximum age is kept (1 % of it)
# What one log entry costs the queue beyond its data (its id, tags and the stream's own bookkeeping), as a job's log
# cap counts it: without it, a job printing one-byte lines would write eight million entries under an 8 MB cap.
LOG_ENTRY_OVERHEAD_BYTES = 128


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


def fenced_script(name: str) -> str:
    """A script that a worker's delivery writes through, preceded by the function that refuses stale deliveries."""
    return lua_script("fence.lua") + lua_script(name)


def writer_script(name: str) -> str:
    """A script that appends to an output queue, preceded by the functions that keep it to its maximum age and
    refuse stale deliveries."""
    return lua_script("sink_retention.lua") + fenced_script(name)


@dataclass(frozen=True)
class Fence:
    """Whose write this is: delivery `attempt` of the request whose state hash is `state_key`. Its scripts refuse
    the write once another delivery of the request is current (fence.lua)."""

    state_key: str
    attempt: int


def retention_defaults() -> list[int]:
    """The arguments every writer script passes after `now`: the defaults of the output queue's maximum length and
    age (used while the limits hash lacks them) and how many checkpoints its clock keeps per maximum age."""
    return [Limit.SINK_MAX_LENGTH.default, Limit.SINK_MAX_AGE_S.default, CHECKPOINTS_PER_MAX_AGE]


def append_script() -> str:
    """The text of the script `Sink.append` runs, for a client that registers it itself (the front end's, async)."""
    return writer_script("sink_append.lua")


def stream_id(index: int) -> str:
    """The stream entry id of the item with this index (output and input queues alike)."""
    return f"{index}-0"


def as_text(value: bytes | str) -> str:
    """A name or id from a Redis reply (bytes from a client that does not decode responses) as text."""
    return value.decode() if isinstance(value, bytes) else value


def index_of(sid: bytes | str) -> int:
    """The index of the item with this stream entry id."""
    return int(as_text(sid).split("-", 1)[0])


def entry_tags(request_id: str, task_type: str, entry_type: EntryType, **extra: object) -> dict[str, str]:
    """The tags every sink entry carries, plus entry-specific ones (exitCode, stream, ...)."""
    tags = {"requestId": request_id, "taskType": task_type, "type": entry_type.value}
    tags.update({key: str(value) for key, value in extra.items()})
    return tags


def encode_tags(tags: Mapping[str, str]) -> bytes:
    return json.dumps({str(k): str(v) for k, v in tags.items()}, separators=(",", ":")).encode()


def decode_entry(stream_id: bytes | str, fields: Mapping[bytes, bytes]) -> SinkEntry:
    """A SinkEntry from one raw XRANGE/XREAD item."""
    raw_tags = fields.get(b"tags") or b"{}"
    return SinkEntry(index=index_of(stream_id), data=fields.get(b"data", b""), tags=json.loads(raw_tags))


class Sink:
    """Reads and appends a service's output queue. The client must not decode responses (data is bytes)."""

    def __init__(self, client: redis.Redis, service: str, *, frontend: str | None = None) -> None:
        self._redis = client
        self.service = service
        self.frontend = frontend or service  # each front end of a service has its own output queue
        self.stream = keys.frontend_sink_stream(service, self.frontend)
        self.counter = keys.frontend_sink_index_counter(service, self.frontend)
        self.limits = keys.queue_limits(service)
        self.clock = keys.frontend_sink_clock(service, self.frontend)
        self.evicted = keys.frontend_sink_evicted(service, self.frontend)
        # state_finish.lua makes the same append (INCR, XADD, trim) together with the end of a request state
        self._append = client.register_script(append_script())

    def append(
        self, data: bytes, tags: Mapping[str, str], *, now: float | None = None, fence: Fence | None = None
    ) -> int:
        """Append one entry at `now` (default: the time) and return its index; 0 when `fence` names a delivery
        that is no longer current (nothing written). A request's final entry goes through `RequestStore.finish`
        instead, which ends the request's state in the same step."""
        return self.append_many([(data, tags)], now=now, fence=fence)

    def append_many(
        self, entries: Sequence[tuple[bytes, Mapping[str, str]]], *, now: float | None = None,
        fence: Fence | None = None,
    ) -> int:  # fmt: skip
        """Append (data, tags) entries, in order, in one call, and return the first one's index (the others follow
        it); 0 when `fence` names a delivery that is no longer current (nothing written)."""
        return int(self._append(*self.append_call(entries, now, fence)))

    def append_call(
        self, entries: Sequence[tuple[bytes, Mapping[str, str]]], now: float | None = None, fence: Fence | None = None
    ) -> tuple[list[str], list[bytes | float | int | str]]:
        """The keys and arguments of sink_append.lua for these entries (`append_script` runs it on redis.asyncio)."""
        at = time.time() if now is None else now
        attempt: int | str = fence.attempt if fence is not None else ""
        args: list[bytes | float | int | str] = [at, *retention_defaults(), attempt]
        for data, tags in entries:
            args += [data, encode_tags(tags)]
        entry_keys = [self.stream, self.counter, self.limits, self.clock, self.evicted]
        if fence is not None:
            entry_keys.append(fence.state_key)
        return entry_keys, args

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
