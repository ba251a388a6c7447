"""Request state in Redis: queued -> running (on which worker) -> done / failed / cancelled, with timestamps."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis

from scalablejob import keys
from scalablejob.errors import RequestError
from scalablejob.sink import HashUpdate, encode_tags

FINISHED_STATE_TTL_S = 7 * 24 * 3600  # finished requests stay searchable for a week, then Redis forgets them


class RequestStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RequestStatus.DONE, RequestStatus.FAILED, RequestStatus.CANCELLED)


_INTEGER_FIELDS = ("exit_code", "result_index", "retries", "log_index")


@dataclass(frozen=True)
class RequestState:
    """A snapshot of one request as the service sees it."""

    request_id: str
    index: int
    task_type: str
    status: RequestStatus
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    progress: float | None = None
    message: str | None = None
    exit_code: int | None = None
    result_index: int | None = None
    error: str | None = None
    retries: int = 0
    log_index: int | None = None  # sink index of the request's first log or progress entry
    cancel_requested: bool = False
    frontend: str | None = None  # the front end the request came through (None: the service's own)

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> RequestState:
        text = {k.decode(): v.decode() for k, v in raw.items()}
        number = {name: float(text[name]) for name in ("started_at", "finished_at", "progress") if name in text}
        whole = {name: int(text[name]) for name in _INTEGER_FIELDS if name in text}
        return cls(
            request_id=text["request_id"],
            index=int(text["index"]),
            task_type=text["task_type"],
            status=RequestStatus(text["status"]),
            queued_at=float(text["queued_at"]),
            worker=text.get("worker"),
            message=text.get("message"),
            error=text.get("error"),
            cancel_requested=text.get("cancel_requested") == "1",
            frontend=text.get("frontend"),
            **number,  # type: ignore[arg-type]
            **whole,  # type: ignore[arg-type]
        )


# A new queued request (0 if its id is in use), mirrored into its front end's input stream (KEYS[4]) under id
# <index>-0, so the queue protocol can read, watch and count waiting requests; the worker's final sink append
# removes it again.
# `sink_from` is the last index of the front end's output queue (KEYS[5]) now: every entry of this request comes
# after it, so a search of the output queue by request id starts there instead of at the beginning.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local index = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'request_id', ARGV[1], 'index', index, 'task_type', ARGV[2],
           'status', 'queued', 'queued_at', ARGV[3], 'sink_from', redis.call('GET', KEYS[5]) or 0)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'frontend', ARGV[4]) end
redis.call('HSET', KEYS[3], index, ARGV[1])
redis.call('XADD', KEYS[4], index .. '-0', 'data', ARGV[5], 'tags', ARGV[6])
return index
"""

# Updates never recreate a request that is gone (expired, discarded): they touch only an existing hash.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

_REQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'message', ARGV[1])
redis.call('HDEL', KEYS[1], 'worker', 'started_at')
return redis.call('HINCRBY', KEYS[1], 'retries', 1)
"""


class RequestStore:
    """Reads and writes the state of a service's requests. The client must not decode responses."""

    def __init__(self, client: redis.Redis, service: str) -> None:
        self._redis = client
        self.service = service
        self._create = client.register_script(_CREATE)
        self._update_script = client.register_script(_UPDATE)
        self._requeue = client.register_script(_REQUEUE)

    def _key(self, request_id: str) -> str:
        return keys.request_state(self.service, request_id)

    def create(
        self,
        request_id: str,
        task_type: str,
        *,
        frontend: str | None = None,
        data: bytes = b"",
        tags: Mapping[str, str] | None = None,
        now: float | None = None,
    ) -> int:
        """Record a new queued request of `frontend` (default: the service's own) and return its index, the request
        (data and tags) mirrored into that front end's input queue; a request id in use is an error."""
        own = frontend or self.service
        index = self._create(
            keys=[
                self._key(request_id), keys.input_index_counter(self.service), keys.input_index_map(self.service),
                keys.input_stream(self.service, own), keys.frontend_sink_index_counter(self.service, own),
            ],
            args=[request_id, task_type, _now(now), frontend or "", data, encode_tags(tags or {})],
        )  # fmt: skip
        return _new_index(index, request_id)

    def discard(self, request_id: str, index: int, frontend: str | None = None) -> None:
        """Forget a request whose enqueue failed, its input queue entry included, so nothing claims it is queued."""
        self._redis.delete(self._key(request_id))
        self._redis.hdel(keys.input_index_map(self.service), index)
        self._redis.xdel(keys.input_stream(self.service, frontend or self.service), f"{index}-0")

    def apply(self, update: HashUpdate) -> bool:
        """Apply an update to a request that still exists; False (and no change) if it does not."""
        pairs = [item for name_value in update.fields.items() for item in name_value]
        return bool(self._update_script(keys=[update.key], args=[update.ttl_s, *pairs]))

    def mark_running(self, request_id: str, worker: str, now: float | None = None) -> None:
        fields: dict[str, str | float] = {
            "status": RequestStatus.RUNNING.value,
            "worker": worker,
            "started_at": _now(now),
        }
        self.apply(HashUpdate(self._key(request_id), fields, ttl_s=0))

    def requeued(self, request_id: str, reason: str) -> None:
        """Back to queued after a worker could not finish it; `retries` counts how often."""
        self._requeue(keys=[self._key(request_id)], args=[reason])

    def set_progress(self, request_id: str, fraction: float, message: str = "") -> None:
        self.apply(HashUpdate(self._key(request_id), {"progress": fraction, "message": message}, ttl_s=0))

    def set_log_index(self, request_id: str, index: int) -> None:
        """Remember where the request's log starts in the sink, so `logs` need not scan the whole stream."""
        self.apply(HashUpdate(self._key(request_id), {"log_index": index}, ttl_s=0))

    def request_cancel(self, request_id: str) -> bool:
        """Flag a request for cancellation (its worker polls the flag); False if the request is unknown."""
        return self.apply(HashUpdate(self._key(request_id), {"cancel_requested": 1}, ttl_s=0))

    def cancel_requested(self, request_id: str) -> bool:
        return self._redis.hget(self._key(request_id), "cancel_requested") == b"1"

    def finish_update(
        self,
        request_id: str,
        status: RequestStatus,
        now: float | None = None,
        *,
        exit_code: int | None = None,
        error: str | None = None,
    ) -> HashUpdate:
        """The state change that ends a request; `Sink.append(..., then=...)` applies it with the result entry."""
        fields: dict[str, str | float | int] = {"status": status.value, "finished_at": _now(now)}
        optional = {"exit_code": exit_code, "error": error}
        fields.update({name: value for name, value in optional.items() if value is not None})
        return HashUpdate(self._key(request_id), fields, FINISHED_STATE_TTL_S)

    def finish(self, request_id: str, status: RequestStatus, now: float | None = None, **details: int | str) -> None:
        """End a request that has no result entry (e.g. cancelled); its state expires after FINISHED_STATE_TTL_S."""
        self.apply(self.finish_update(request_id, status, now, **details))  # type: ignore[arg-type]

    def get(self, request_id: str) -> RequestState | None:
        raw: Any = self._redis.hgetall(self._key(request_id))
        return RequestState.from_hash(raw) if raw else None

    def get_by_index(self, index: int) -> RequestState | None:
        request_id: Any = self._redis.hget(keys.input_index_map(self.service), index)
        return self.get(request_id.decode()) if request_id else None


def _new_index(index: Any, request_id: str) -> int:
    """The index a create script returned; 0 means the request id was taken."""
    if int(index) == 0:
        raise RequestError(f"requestId {request_id!r} is already in use: expected a new, unique id")
    return int(index)


def _now(now: float | None) -> float:
    return now if now is not None else time.time()
