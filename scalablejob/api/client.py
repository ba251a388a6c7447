"""The Python client: submits work straight to Redis and reads results from the sink, no front end needed."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator, Mapping

import redis
from celery import Celery

from scalablejob.api.celery_app import make_app
from scalablejob.model import keys
from scalablejob.model.errors import BrokerError, BrokerRefused, RequestError, ResultTimeout
from scalablejob.model.routing import TASK_TYPE_TAG, TaskRegistry, TaskType, queue_for, resolve_task, task_name_for
from scalablejob.store.cancel import CancelOutcome, cancel_request
from scalablejob.store.logs import request_entries
from scalablejob.store.outage import describe_refusal
from scalablejob.store.queues import NORMAL_PRIORITY, URGENT_PRIORITY, QueueMessage
from scalablejob.store.redis_url import connect, wait_for_replicas
from scalablejob.store.sink import Sink, SinkEntry
from scalablejob.store.state import NewRequest, RequestState, RequestStore
from scalablejob.store.task_registry import RegistryCache
from scalablejob.transport.message import task_message

REQUEST_ID_TAG = "requestId"
PRIORITY_TAG = "_priority_"
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
Route = tuple[TaskType, str | None]  # the task type a request runs as, and its named task (None: the generic one)


def new_request_id() -> str:
    return uuid.uuid4().hex


def normalize_tags(tags: Mapping[str, object] | None) -> dict[str, str]:
    """Tags as the queue service carries them: string keys and values."""
    return {str(key): str(value) for key, value in (tags or {}).items()}


def priority_of(tags: Mapping[str, str]) -> int:
    """`_priority_=1` puts a request ahead of normal ones; 0 or no tag is normal."""
    value = tags.get(PRIORITY_TAG, "0")
    if value not in ("0", "1"):
        raise RequestError(f"tag {PRIORITY_TAG} {value!r}: expected 0 (normal) or 1 (ahead of normal requests)")
    return URGENT_PRIORITY if value == "1" else NORMAL_PRIORITY


def checked_request_id(tags: Mapping[str, str]) -> str:
    """The request id a client chose (validated), or a new one."""
    request_id = tags.get(REQUEST_ID_TAG)
    if request_id is None:
        return new_request_id()
    if not _REQUEST_ID.fullmatch(request_id):
        raise RequestError(f"tag requestId {request_id!r}: expected 1 to 128 characters of A-Z a-z 0-9 _ . : -")
    return request_id


def request_message(
    app: Celery, service: str, request_id: str, body: bytes, tags: Mapping[str, str], task_type: TaskType,
    task_name: str | None, frontend: str,
) -> QueueMessage:  # fmt: skip
    """The Celery message of a request: what its put queues, and what the reconciler re-sends if it was lost."""
    return task_message(
        app,
        task_name or task_name_for(task_type),  # a named task runs as itself, so Flower shows its name
        request_id,
        (body, dict(tags)),
        {"frontend": frontend},  # the return address: the worker writes to this front end's sink
        queue_for(service, task_type),
        priority_of(tags),
    )


def new_request(
    app: Celery, service: str, frontend: str, data: bytes | str, tags: Mapping[str, str], route: Route
) -> NewRequest:  # fmt: skip
    """The request a put of `data` with (normalized) `tags`, routed to `route`, enqueues; a RequestError names a bad
    request id or priority, before anything is written."""
    body = data.encode() if isinstance(data, str) else bytes(data)
    task_type, task_name = route
    request_id = checked_request_id(tags)
    clean = {**tags, REQUEST_ID_TAG: request_id, TASK_TYPE_TAG: task_type.value}
    message = request_message(app, service, request_id, body, clean, task_type, task_name, frontend)
    return NewRequest(request_id, task_type, task_name, body, clean, message)


@contextlib.contextmanager
def refusals_named(what: str) -> Iterator[None]:
    """Turn the broker's refusal of a write (MISCONF, OOM, READONLY...: raw Redis, or wrapped by a Lua script) into
    a BrokerRefused that says what could not be done and why; any other error passes unchanged."""
    try:
        yield
    except redis.ResponseError as exc:
        why = describe_refusal(str(exc))
        if why is None:
            raise
        raise BrokerRefused(f"{what}: {why}; nothing was written, try again once that is fixed") from exc


def send_message(client: redis.Redis, service: str, message: QueueMessage) -> None:
    """Queue a message outside a put (the reconciler's re-send), and tell the scaler as a put does."""
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(message.list_key, message.payload)
        pipe.publish(keys.task_sent_channel(service), message.list_key)
        pipe.execute()


class JobClient:
    """Submit command and query tasks to one service and wait for their results.

    `frontend` names the front end the requests come through (default: the service's own): results go to that
    front end's output queue, and waiting requests show in its input queue.
    """

    def __init__(
        self, service: str, broker: str, *, default_task_type: str | None = None, frontend: str | None = None
    ) -> None:
        self.service = service
        self.frontend = frontend or service
        self.default_task_type = default_task_type
        self.broker = broker
        self._redis = connect(broker)
        self.app = make_app(service, broker)  # builds the Celery messages; `.close()` closes it
        self.sink = Sink(self._redis, service, frontend=self.frontend)
        self.requests = RequestStore(self._redis, service)
        self.tasks = RegistryCache(self._redis, service)

    def put(
        self, data: bytes | str, tags: Mapping[str, object] | None = None, *, tasks: TaskRegistry | None = None
    ) -> tuple[int, str]:
        """Enqueue one request routed by its `task` or `taskType` tag; returns (index, request_id). Nothing is
        written when the tags name an unknown task or type. `tasks`: named tasks the caller knows from its own code
        (`.delay()`), known even before a worker of the service has registered them."""
        clean = normalize_tags(tags)
        request = new_request(self.app, self.service, self.frontend, data, clean, self._route(clean, tasks or {}))
        with refusals_named(f"could not enqueue request {request.request_id} on {self.service}"):
            index = self.requests.create_new(request, self.frontend)
        try:
            wait_for_replicas(self._redis, self.broker)  # with ?replicas=N: acknowledged only once replicated
        except Exception as exc:
            self.requests.discard(request.request_id, index, self.frontend)
            raise BrokerError(f"could not enqueue request {request.request_id} on {self.service}: {exc}") from exc
        return index, request.request_id

    def _route(self, tags: Mapping[str, str], known: TaskRegistry) -> Route:
        """Resolve against the cached registry; a name it does not know is looked up afresh before it is refused."""
        try:
            return resolve_task(tags, {**self.tasks.get(), **known}, self.default_task_type, self.service)
        except RequestError:
            registry = {**self.tasks.get(fresh=True), **known}
            return resolve_task(tags, registry, self.default_task_type, self.service)

    def state(self, request_id: str) -> RequestState | None:
        return self.requests.get(request_id)

    def result(self, request_id: str, timeout: float | None = None) -> SinkEntry:
        """Wait for a request's final sink entry (type `result` or `error`); ResultTimeout after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen, state, final = self.requests.outcome(request_id, self.sink)
        while not state.status.finished:
            remaining_ms = 1000 if deadline is None else int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise ResultTimeout(f"request {request_id} still {state.status.value} after {timeout} s")
            for entry in self.sink.wait(seen, block_ms=min(remaining_ms, 1000)):
                seen = entry.index
                if entry.request_id == request_id and entry.is_final:
                    return entry
            state = self.requests.require(request_id)
        return final if final is not None and final.request_id == request_id else self._final_entry(state)

    def cancel(self, request_id: str) -> CancelOutcome:
        """Cancel a queued request (it leaves its queue) or a running one (its worker stops it)."""
        with refusals_named(f"could not cancel request {request_id} of {self.service}"):
            return cancel_request(self._redis, self.service, request_id)

    def logs(self, request_id: str, *, follow: bool = False) -> Iterator[SinkEntry]:
        """A request's log, progress and final entries; with `follow`, as they come until it ends."""
        return request_entries(self.sink, self.requests, request_id, follow=follow)

    def read_sink(self, start_index: int = 1, count: int = 100) -> list[SinkEntry]:
        return self.sink.read(start_index, count)

    def close(self) -> None:
        self._redis.close()
        self.app.close()

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _final_entry(self, state: RequestState) -> SinkEntry:
        if state.result_index is None:
            raise RequestError(f"request {state.request_id} ended {state.status.value} without a result entry")
        entry = self.sink.get(state.result_index)
        if entry is None:
            raise RequestError(f"the result of request {state.request_id} was already deleted from the sink")
        return entry
