"""Celery's result API over the queue service: `AsyncResult(id).state`, `.get()` and `.revoke()` read and act on the
request itself (its state hash and final output queue entry), so a Celery user needs no second result store.

`task_meta` is the pure mapping from a request to Celery's result meta; the backend and the control only fetch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import redis
from celery import states
from celery.app.control import Control
from celery.backends.base import BaseBackend
from celery.exceptions import TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError

from scalablejob.model.errors import CommandFailed, HandlerError, RequestError
from scalablejob.model.routing import TaskType
from scalablejob.model.task_result import (
    ERROR_MODULE_TAG,
    ERROR_TYPE_TAG,
    RESULT_ENCODING_TAG,
    command_failure,
    decode_value,
    error_message,
    rebuild_exception,
)
from scalablejob.store.cancel import cancel_request
from scalablejob.store.redis_url import connect
from scalablejob.store.sink import Sink, SinkEntry
from scalablejob.store.state import RequestState, RequestStatus, RequestStore

BACKEND_URL = "scalablejob://request-state"  # what the worker's banner shows as its results

CELERY_STATES = {
    RequestStatus.QUEUED: states.PENDING,
    RequestStatus.RUNNING: states.STARTED,
    RequestStatus.DONE: states.SUCCESS,
    RequestStatus.FAILED: states.FAILURE,
    RequestStatus.CANCELLED: states.REVOKED,
}


def celery_state(status: RequestStatus | None) -> str:
    """Our request status as Celery's task state; an unknown request is PENDING, as in Celery."""
    return states.PENDING if status is None else CELERY_STATES[status]


def failure_of(state: RequestState, final: SinkEntry | None) -> BaseException:
    """The exception a failed request raises from `.get()`: the task's own type and message when its final entry
    names them, else CommandFailed (with the exit code) or HandlerError with the request's error."""
    text = state.error or f"request {state.request_id} failed"
    tags = final.tags if final is not None else {}
    type_name = tags.get(ERROR_TYPE_TAG)
    if type_name:
        return rebuild_exception(type_name, tags.get(ERROR_MODULE_TAG, ""), error_message(text, type_name))
    if state.task_type == TaskType.COMMAND.value:
        return CommandFailed(command_failure(text, state.exit_code))
    return HandlerError(text)


def task_meta(request_id: str, state: RequestState | None, final: SinkEntry | None) -> dict[str, Any]:
    """Celery's result meta of a request: its state, and its value or exception once it has ended. A SUCCESS whose
    final entry is gone from the output queue (deleted by a reader, or past its age) has the value None."""
    status = celery_state(state.status if state else None)
    result: Any = None
    if state is not None and status == states.STARTED:
        result = {"hostname": state.worker, "progress": state.progress, "message": state.message}
    elif state is not None and status == states.SUCCESS and final is not None:
        result = decode_value(final.data, final.tags.get(RESULT_ENCODING_TAG))
    elif state is not None and status == states.FAILURE:
        result = failure_of(state, final)
    elif state is not None and status == states.REVOKED:
        result = TaskRevokedError(state.error or "cancelled")
    finished = state.finished_at if state is not None else None
    return {
        "task_id": request_id, "status": status, "result": result, "traceback": None, "children": [],
        "date_done": None if finished is None else datetime.fromtimestamp(finished, tz=timezone.utc),
    }  # fmt: skip


class QueueServiceBackend(BaseBackend):
    """A read-only result backend: workers write results to the output queue; this reads them back."""

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url or BACKEND_URL, **kwargs)
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = connect(str(self.app.conf.broker_url))
        return self._client

    @property
    def service(self) -> str:
        return str(getattr(self.app, "service", self.app.main))

    def _request(self, request_id: str) -> tuple[RequestState | None, Sink]:
        state = RequestStore(self.client, self.service).get(request_id)
        return state, Sink(self.client, self.service, frontend=state.frontend if state else None)

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        state, sink = self._request(task_id)
        final = sink.get(state.result_index) if state is not None and state.result_index is not None else None
        return task_meta(task_id, state, final)

    def wait_for(
        self, task_id: str, timeout: float | None = None, interval: float = 0.5, no_ack: bool = True,
        on_interval: Any = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Wait for the request to end, woken by its output queue rather than by polling alone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            _, sink = self._request(task_id)
            seen = sink.last_index()  # before the state: an entry written in between wakes the wait below
            meta = self.get_task_meta(task_id, cache=False)
            if meta["status"] in states.READY_STATES:
                return meta
            if on_interval:
                on_interval()
            remaining = interval if deadline is None else min(interval, deadline - time.monotonic())
            if remaining <= 0:
                raise CeleryTimeoutError(f"request {task_id} still {meta['status']} after {timeout} s")
            sink.wait(seen, block_ms=max(1, int(remaining * 1000)))

    def cancel(self, request_id: str) -> None:
        """Cancel a request as `scalablejob cancel` does; one that has already ended is left as it is (as Celery's
        revoke of a finished task does nothing); an unknown one is a RequestError."""
        state = RequestStore(self.client, self.service).require(request_id)
        if state.status.finished:
            return
        try:
            cancel_request(self.client, self.service, request_id)
        except RequestError:
            if not RequestStore(self.client, self.service).require(request_id).status.finished:
                raise  # it ended between the two reads: nothing left to cancel

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> Any:
        return result  # the worker has written the request's final entry itself

    def _store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> Any:
        return result

    def _forget(self, task_id: str) -> None:
        """A request's result goes when its output queue entry does (its age, or a reader deleting it)."""


class ServiceControl(Control):
    """Celery's remote control, but revoke cancels the request through the queue service."""

    def revoke(
        self, task_id: str | Iterable[str], destination: Any = None, terminate: bool = False, signal: Any = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        """Cancel each request: a queued one leaves its queue, a running one is stopped by its worker (a training
        task's process group gets SIGTERM, then SIGKILL after the grace), whatever `terminate` says."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        for request_id in ids:
            self.app.backend.cancel(request_id)
