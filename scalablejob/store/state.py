"""Request state in Redis: queued -> running (on which worker) -> done / failed / cancelled, with timestamps.

This module is the one owner of a request's state hash (keys.request_state): it names its fields (Field) and
holds every Lua script that touches it (the state_*.lua files beside it), so no other module spells either.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis
from redis import asyncio as aioredis
from redis.commands.core import AsyncScript

from scalablejob.model import keys
from scalablejob.model.errors import QueueFull, RequestError
from scalablejob.model.history import FAILURES_CAP, TIMINGS_CAP, ActivityTally
from scalablejob.model.protocol import PROTOCOL_VERSION, RECORD_FIELD, version_of
from scalablejob.model.routing import TaskType
from scalablejob.store.limits import Limit
from scalablejob.store.lua import lua_script
from scalablejob.store.queues import QueueMessage
from scalablejob.store.sink import (
    Fence,
    Sink,
    SinkEntry,
    as_text,
    decode_entry,
    encode_tags,
    fenced_script,
    retention_defaults,
    stream_id,
    writer_script,
)

# finished requests stay searchable as long as the output queue keeps entries (queue.sink.max_age_seconds, a week
# by default), then Redis forgets them: this is the expiry while no part has recorded the service's limits
FINISHED_STATE_TTL_S = Limit.SINK_MAX_AGE_S.default
CANCEL_ASKED = -2  # what finish(..., unless_cancelled=True) answers when the request's cancel was asked meanwhile


class Field:
    """The fields of a request's state hash, each named like the RequestState attribute it fills; the Lua scripts
    beside this module use the same names."""

    REQUEST_ID = "request_id"
    INDEX = "index"  # the request's input index: its item in the front end's input queue is <index>-0
    TASK_TYPE = "task_type"
    STATUS = "status"
    QUEUED_AT = "queued_at"
    STARTED_AT = "started_at"
    FINISHED_AT = "finished_at"
    WORKER = "worker"
    PROGRESS = "progress"
    MESSAGE = "message"
    EXIT_CODE = "exit_code"
    RESULT_INDEX = "result_index"
    ERROR = "error"
    RETRIES = "retries"
    LOG_INDEX = "log_index"
    CANCEL_REQUESTED = "cancel_requested"
    FRONTEND = "frontend"
    SINK_FROM = "sink_from"
    TASK = "task"  # the Celery task it was sent to when that is a named task (@job.task): a re-send uses it again
    ATTEMPT = "attempt"  # the current delivery: bumped at each start and requeue; older deliveries' writes are refused
    PROTOCOL = RECORD_FIELD  # the protocol version its put wrote it and its message in (none: version 1)


_TEXT_FIELDS = (
    Field.REQUEST_ID, Field.TASK_TYPE, Field.WORKER, Field.MESSAGE, Field.ERROR, Field.FRONTEND, Field.TASK,
)  # fmt: skip
_FLOAT_FIELDS = (Field.QUEUED_AT, Field.STARTED_AT, Field.FINISHED_AT, Field.PROGRESS)
_INTEGER_FIELDS = (
    Field.INDEX, Field.EXIT_CODE, Field.RESULT_INDEX, Field.RETRIES, Field.LOG_INDEX, Field.SINK_FROM, Field.ATTEMPT,
)  # fmt: skip


@dataclass(frozen=True)
class NewRequest:
    """A request ready to be recorded and queued in one call (RequestStore.create_new, FrontEndRequests.create): its
    id, where it goes, what it carries and its Celery message. Nothing is written yet (client.new_request)."""

    request_id: str
    task_type: TaskType
    task_name: str | None
    body: bytes
    tags: dict[str, str]
    message: QueueMessage


@dataclass(frozen=True)
class UnackedMessage:
    """The message a worker took a request from, as kombu's Redis transport keeps it until acknowledged: its
    delivery tag in the `unacked` hash and its index (a finish acknowledges it in the same step)."""

    tag: str
    unacked_key: str = "unacked"
    unacked_index_key: str = "unacked_index"
    record: str | None = None  # the message as kombu stores it, while not recorded yet: the start records it
    delivered_at: float = 0.0  # when it was taken (its score in the unacked index)


class RequestStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RequestStatus.DONE, RequestStatus.FAILED, RequestStatus.CANCELLED)


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
    sink_from: int = 0  # its front end's last output index when it was put: every entry of it comes after
    attempt: int = 0  # its current delivery (0: none started yet)
    task: str | None = None  # the named task it goes to (None: the generic task of its type)
    protocol: int | None = PROTOCOL_VERSION  # the version it was put in (None: unreadable)

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes]) -> RequestState:
        text = {k.decode(): v.decode() for k, v in raw.items()}
        values: dict[str, Any] = {name: text[name] for name in _TEXT_FIELDS if name in text}
        values.update({name: float(text[name]) for name in _FLOAT_FIELDS if name in text})
        values.update({name: int(text[name]) for name in _INTEGER_FIELDS if name in text})
        status = RequestStatus(text[Field.STATUS])
        protocol = version_of(text.get(Field.PROTOCOL))
        return cls(status=status, cancel_requested=text.get(Field.CANCEL_REQUESTED) == "1", protocol=protocol, **values)


class RequestStore:
    """Reads and writes the state of a service's requests. The client must not decode responses. With an `activity`
    tally (a worker's), the starts and finishes this store writes are counted there for the dashboard, to be written
    in batches, instead of by each start's and finish's script."""

    def __init__(self, client: redis.Redis, service: str, activity: ActivityTally | None = None) -> None:
        self._redis = client
        self.service = service
        self._activity = activity
        self._timings_cap: int | str = TIMINGS_CAP if activity is None else ""  # '': the scripts count nothing
        self._create = client.register_script(lua_script("state_create.lua"))
        self._start = client.register_script(lua_script("capped_list.lua") + lua_script("state_start.lua"))
        self._outcome = client.register_script(lua_script("state_outcome.lua"))
        self._update = client.register_script(fenced_script("state_update.lua"))
        self._requeue = client.register_script(fenced_script("state_requeue.lua"))
        self._finish = client.register_script(lua_script("capped_list.lua") + writer_script("state_finish.lua"))

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
        task_name: str | None = None,
        message: QueueMessage | None = None,
    ) -> int:
        """Record a new queued request of `frontend` (default: the service's own) and return its index, the request
        (data and tags) mirrored into that front end's input queue; a request id in use is an error. `message`, its
        Celery message, is queued in the same step (and the scaler told), or in neither step if the request is not
        recorded."""
        call = _create_call(self.service, request_id, task_type, frontend, data, tags, now, task_name, message)
        return _new_index(self._create(*call), request_id, frontend or self.service)

    def create_new(self, request: NewRequest, frontend: str | None = None) -> int:
        """Record and queue `request` (client.new_request) in one call; returns its index."""
        return self.create(
            request.request_id, request.task_type.value, frontend=frontend, data=request.body, tags=request.tags,
            task_name=request.task_name, message=request.message,
        )  # fmt: skip

    def discard(self, request_id: str, index: int, frontend: str | None = None) -> None:
        """Forget a request whose enqueue failed, its input queue entry included, so nothing claims it is queued."""
        with self._redis.pipeline(transaction=False) as pipe:
            for command in _discard_commands(self.service, frontend or self.service, request_id, index):
                pipe.execute_command(*command)
            pipe.execute()

    def fence(self, request_id: str, attempt: int) -> Fence:
        """What a delivery's writes to the output queue carry, so they are refused once it is stale."""
        return Fence(self._key(request_id), attempt)

    def _apply(self, request_id: str, fields: Mapping[str, str | int | float], attempt: int | None = None) -> bool:
        """Update a request that still exists (as delivery `attempt`, if given); False (no change) if it does not,
        or if that delivery is no longer current."""
        return bool(self._update(keys=[self._key(request_id)], args=[_attempt_arg(attempt), *_pairs(fields)]))

    def mark_running(
        self, request_id: str, worker: str, now: float | None = None, message: UnackedMessage | None = None
    ) -> int:
        """Start a delivery of the request on `worker`; returns its attempt number, which fences every earlier one
        (0: the request is gone; -1: it has ended; -2: it was cancelled while queued: this delivery must not run).
        A start is counted, its wait kept, for the dashboard (scalablejob.model.history). A `message` with a record
        (taken and not recorded yet) is recorded as unacknowledged in the same step, whatever the start finds."""
        started_at = _now(now)
        call_keys = [self._key(request_id), keys.activity_counts(self.service), keys.activity_timings(self.service)]
        args: list[Any] = [worker, started_at, self._timings_cap]
        if message is not None and message.record is not None:
            call_keys += [message.unacked_index_key, message.unacked_key]
            args += [message.tag, message.delivered_at, message.record]
        reply: Any = self._start(keys=call_keys, args=args)
        if not isinstance(reply, list):
            return int(reply)
        attempt, queued_at = reply
        if self._activity is not None:
            self._activity.started(_since(queued_at, started_at))
        return int(attempt)

    def requeued(self, request_id: str, reason: str, attempt: int | None = None) -> bool:
        """Back to queued after a worker could not finish it (delivery `attempt`, if the worker itself gives it
        back); `retries` counts how often. The attempt is bumped, so the old delivery can no longer write. False
        (no change) when the request is gone or ended, or that delivery was no longer current."""
        return bool(self._requeue(keys=[self._key(request_id)], args=[reason, _attempt_arg(attempt)]))

    def set_progress(self, request_id: str, fraction: float, message: str = "", attempt: int | None = None) -> bool:
        return self._apply(request_id, {Field.PROGRESS: fraction, Field.MESSAGE: message}, attempt)

    def set_log_index(self, request_id: str, index: int, attempt: int | None = None) -> bool:
        """Remember where the request's log starts in the sink, so `logs` need not scan the whole stream."""
        return self._apply(request_id, {Field.LOG_INDEX: index}, attempt)

    def request_cancel(self, request_id: str) -> bool:
        """Flag a request for cancellation (its worker polls the flag); False if the request is unknown."""
        return self._apply(request_id, {Field.CANCEL_REQUESTED: 1})

    def delivery_view(self, request_id: str) -> tuple[int, bool]:
        """What a running delivery polls: the current attempt (0 if the request is gone) and the cancel flag."""
        attempt, cancel = self._redis.hmget(self._key(request_id), [Field.ATTEMPT, Field.CANCEL_REQUESTED])
        return int(attempt or 0), cancel == b"1"

    def finish(
        self, sink: Sink, request_id: str, status: RequestStatus, data: bytes, tags: Mapping[str, str], *,
        now: float | None = None, exit_code: int | None = None, error: str | None = None, attempt: int | None = None,
        unless_cancelled: bool = False, message: UnackedMessage | None = None,
    ) -> int:  # fmt: skip
        """End a request: append its final entry to `sink` (its front end's output queue) and return the entry's
        index; in the same step its state ends (`status`, `result_index`, the details given) and it leaves that
        front end's input queue. Returns 0, and writes nothing, when the request has ended already or delivery
        `attempt` (if given) is no longer current: a request has exactly one final entry; CANCEL_ASKED (nothing
        written) when `unless_cancelled` and a cancel was asked meanwhile. The state and its index
        expire when the output queue's maximum age has passed
        (queue.sink.max_age_seconds; FINISHED_STATE_TTL_S until a part records the limits). `message`, the one the
        request was taken from, is acknowledged with the final entry (not when nothing is written).
        The finish is counted, its run time kept and a failure listed, for the dashboard (scalablejob.model.history)."""
        finished_at = _now(now)
        fields: dict[str, str | float | int] = {Field.STATUS: status.value, Field.FINISHED_AT: finished_at}
        optional = {Field.EXIT_CODE: exit_code, Field.ERROR: error}
        fields.update({name: value for name, value in optional.items() if value is not None})
        entry_keys = [
            sink.stream, sink.counter, self._key(request_id), keys.input_stream(self.service, sink.frontend),
            keys.queue_limits(self.service), sink.clock, *_unacked_keys(message), sink.evicted,
            keys.activity_counts(self.service), keys.activity_timings(self.service), keys.recent_failures(self.service),
        ]  # fmt: skip
        args = [
            data, encode_tags(tags), finished_at, *retention_defaults(), keys.input_index_prefix(self.service),
            _attempt_arg(attempt), "1" if unless_cancelled else "", message.tag if message else "", self._timings_cap,
            FAILURES_CAP, *_pairs(fields),
        ]  # fmt: skip
        reply: Any = self._finish(keys=entry_keys, args=args)
        if not isinstance(reply, list):
            return int(reply)
        index, started_at, existed = reply
        if self._activity is not None:  # a failure counts with its state, as the script counts it
            failed = status is RequestStatus.FAILED and existed == 1
            self._activity.finished(_since(started_at, finished_at), failed=failed)
        return int(index)

    def input_streams(self) -> list[str]:
        """The input streams of the service's front ends, where its open requests are listed."""
        streams: Any = self._redis.smembers(keys.input_streams(self.service))
        return sorted(as_text(stream) for stream in streams)

    def open_ids_page(self, stream: str, after: str, count: int) -> tuple[str, list[str]]:
        """(the last stream id read, '' at the end; the request ids) of up to `count` entries of `stream` after
        stream id `after` ('' for the start). A plain XRANGE: a script that kept the bodies in Redis held it three times
        as long per entry (2.4 against 0.7 µs), and some of its calls took 5 to 83 ms at 100 000 open requests."""
        items: Any = self._redis.xrange(stream, f"({after}" if after else "-", "+", count)
        ids = [request_id for _, fields in items if (request_id := _request_id_of(fields.get(b"tags")))]
        return (as_text(items[-1][0]) if items else ""), ids

    def input_entry(self, state: RequestState) -> SinkEntry | None:
        """The request as it was put (body and tags), from its front end's input queue: None once it has ended."""
        stream = keys.input_stream(self.service, state.frontend or self.service)
        items: Any = self._redis.xrange(stream, min=stream_id(state.index), max=stream_id(state.index))
        return decode_entry(*items[0]) if items else None

    def get(self, request_id: str) -> RequestState | None:
        raw: Any = self._redis.hgetall(self._key(request_id))
        return _state_of(raw)

    def outcome(self, request_id: str, sink: Sink) -> tuple[int, RequestState, SinkEntry | None]:
        """In one round trip: `sink`'s last index (read before the state, so a wait from it misses no entry), the
        request's state (RequestError if it is unknown), and its final entry once it has ended (None before that, or
        if the entry was deleted)."""
        reply: Any = self._outcome(keys=[sink.counter, self._key(request_id), sink.stream])
        last, flat, items = reply
        if not flat:
            raise RequestError(f"requestId {request_id!r} is unknown to service {self.service}")
        state = RequestState.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
        entry = None
        if items:
            sid, fields = items[0]
            entry = decode_entry(sid, dict(zip(fields[::2], fields[1::2], strict=True)))
        return int(last), state, entry

    def require(self, request_id: str) -> RequestState:
        """The state of a request that must exist: a RequestError names the request and the service otherwise."""
        state = self.get(request_id)
        if state is None:
            raise RequestError(f"requestId {request_id!r} is unknown to service {self.service}")
        return state


ScriptSender = Callable[[AsyncScript, Sequence[Any], Sequence[Any]], Awaitable[Any]]  # (script, keys, args) -> reply


async def run_alone(script: AsyncScript, call_keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """A script call sent on its own, as the script object sends it."""
    return await script(keys=call_keys, args=args)


class FrontEndRequests:
    """One front end's view of its requests' states, on redis.asyncio: another front end's request is unknown here."""

    def __init__(self, client: aioredis.Redis, service: str, frontend: str, send: ScriptSender = run_alone) -> None:
        """`send`: how a create's script call goes to Redis (`client`'s server), alone by default; the front end
        sends the calls of one turn of its loop together (frontend/put_batch.py)."""
        self._redis = client
        self.service = service
        self.frontend = frontend
        self._input = keys.input_stream(service, frontend)
        self._withdraw = client.register_script(lua_script("state_withdraw.lua"))
        self._create = client.register_script(lua_script("state_create.lua"))
        self._send = send

    async def create(self, request: NewRequest) -> int:
        """Record and queue a request of this front end in one call, as RequestStore.create_new does; its index."""
        call = _create_call(
            self.service, request.request_id, request.task_type.value, self.frontend, request.body, request.tags,
            None, request.task_name, request.message,
        )  # fmt: skip
        return _new_index(await self._send(self._create, *call), request.request_id, self.frontend)

    async def discard(self, request_id: str, index: int) -> None:
        """Forget a request whose enqueue failed, as RequestStore.discard does."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in _discard_commands(self.service, self.frontend, request_id, index):
                pipe.execute_command(*command)
            await pipe.execute()

    async def get(self, request_id: str) -> RequestState | None:
        """The request's state, if it came through this front end."""
        raw: Any = await self._redis.hgetall(keys.request_state(self.service, request_id))
        state = _state_of(raw)
        if state is None or (state.frontend or self.service) != self.frontend:  # none: the service's own front end
            return None
        return state

    async def at_index(self, index: int) -> RequestState | None:
        """The state of the request with this input index, if it came through this front end."""
        request_id: Any = await self._redis.get(keys.input_index_entry(self.service, index))
        return await self.get(request_id.decode()) if request_id else None

    async def withdraw(self, items: Sequence[SinkEntry]) -> int:
        """Take items off the front end's input queue and, in the same step, flag each of their requests that has not
        ended for cancellation; returns how many items were removed."""
        if not items:
            return 0
        states = [keys.request_state(self.service, item.request_id) for item in items if item.request_id]
        ids = [stream_id(item.index) for item in items]
        return int(await self._withdraw(keys=[self._input, *states], args=ids))


def _request_id_of(raw_tags: bytes | None) -> str | None:
    """The requestId of an input queue entry's tags, found by a plain search (encode_tags writes compact JSON, so a
    key follows '{' or ',' and a string escapes its quotes); tags where that search fails are decoded whole."""
    if not raw_tags:
        return None
    at = raw_tags.find(b'"requestId":"')
    stop = raw_tags.find(b'"', at + 13) if at > 0 else -1
    if stop >= 0 and raw_tags[at - 1 : at] in (b"{", b",") and b"\\" not in raw_tags[at + 13 : stop]:
        return raw_tags[at + 13 : stop].decode()
    try:
        request_id = json.loads(raw_tags).get("requestId")
    except (ValueError, AttributeError):
        return None
    return request_id if isinstance(request_id, str) else None


def _pairs(fields: Mapping[str, str | int | float]) -> list[str | int | float]:
    """Hash fields as the flat name, value, ... arguments that HSET takes."""
    return [item for name_value in fields.items() for item in name_value]


def _attempt_arg(attempt: int | None) -> str | int:
    """How a script gets a delivery's attempt: '' when the writer is not a delivery (nothing to fence)."""
    return "" if attempt is None else attempt


def _create_call(
    service: str, request_id: str, task_type: str, frontend: str | None, data: bytes, tags: Mapping[str, str] | None,
    now: float | None, task_name: str | None, message: QueueMessage | None,
) -> tuple[list[str], list[Any]]:  # fmt: skip
    """The keys and arguments of state_create.lua for one request, from the sync client and the front end alike."""
    own = frontend or service
    call_keys = [
        keys.request_state(service, request_id), keys.input_index_counter(service), keys.input_stream(service, own),
        keys.frontend_sink_index_counter(service, own), keys.queue_limits(service), keys.input_streams(service),
        message.list_key if message else "",
    ]  # fmt: skip
    args = [
        request_id, task_type, _now(now), frontend or "", data, encode_tags(tags or {}), Limit.INPUT_MAX_LENGTH.default,
        keys.input_index_prefix(service), task_name or "", message.payload if message else "",
        keys.task_sent_channel(service), PROTOCOL_VERSION,
    ]  # fmt: skip
    return call_keys, args


def _discard_commands(service: str, frontend: str, request_id: str, index: int) -> list[tuple[str, ...]]:
    """What forgets a request whose enqueue failed: its state, its index entry and its input queue item."""
    return [
        ("DEL", keys.request_state(service, request_id), keys.input_index_entry(service, index)),
        ("XDEL", keys.input_stream(service, frontend), stream_id(index)),
    ]


def _state_of(raw: Mapping[bytes, bytes]) -> RequestState | None:
    """A request's state from its hash, as read by the sync and the async client alike; None when there is none."""
    return RequestState.from_hash(raw) if raw else None


def _unacked_keys(message: UnackedMessage | None) -> list[str]:
    """The unacked hash and index a finish acknowledges in (kombu's defaults when it acknowledges nothing)."""
    held = message or UnackedMessage("")
    return [held.unacked_key, held.unacked_index_key]


def _new_index(index: Any, request_id: str, frontend: str) -> int:
    """The index a create script returned; 0 means the request id was taken, -1 that the input queue is full."""
    if int(index) == 0:
        raise RequestError(f"requestId {request_id!r} is already in use: expected a new, unique id")
    if int(index) == -1:
        raise QueueFull(
            f"queue {frontend} is full: it holds its maximum number of waiting and running requests "
            f"(queue.source.max_length); retry once some have finished"
        )
    return int(index)


def _now(now: float | None) -> float:
    return now if now is not None else time.time()


def _since(then: bytes | None, now: float) -> float | None:
    """Seconds from a time the state recorded (None: it has none) to `now`."""
    return None if then is None else now - float(then)
