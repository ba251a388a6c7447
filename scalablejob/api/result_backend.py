"""Celery's result API for both kinds of call, on the broker's Redis: a Celery call's result is in Celery's own Redis
result backend (`celery-task-meta-<id>`, chords and groups included); a queue-service request's `AsyncResult(id)`
reads the request itself (its state hash and final output queue entry), and its revoke cancels it.

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
from celery.backends.redis import RedisBackend
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

BACKEND_URL = "scalablejob://celery-results+request-state"  # what the worker's banner shows as its results

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


class ServiceBackend(RedisBackend):  # type: ignore[misc]  # Celery ships no types
    """Celery's Redis result backend on the broker's Redis (any URL the broker takes, Sentinel included), which also
    answers for the ids of queue-service requests from their state."""

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app=app, url=None, **kwargs)
        self.url = BACKEND_URL

    def _create_client(self, **params: Any) -> redis.Redis:
        from scalablejob.api.celery_app import broker_url_of

        return connect(broker_url_of(self.app))

    def as_uri(self, include_password: bool = False) -> str:
        return BACKEND_URL

    @property
    def service(self) -> str:
        return str(getattr(self.app, "service", None) or self.app.main)

    def request_state(self, request_id: str) -> RequestState | None:
        """The queue-service request of this id, if it is one."""
        return RequestStore(self.client, self.service).get(request_id)

    def _request(self, request_id: str) -> tuple[RequestState | None, Sink]:
        state = self.request_state(request_id)
        return state, Sink(self.client, self.service, frontend=state.frontend if state else None)

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        meta: dict[str, Any] = super()._get_task_meta_for(task_id)
        if meta["status"] != states.PENDING:
            return meta
        state, sink = self._request(task_id)
        if state is None:
            return meta
        final = sink.get(state.result_index) if state.result_index is not None else None
        return task_meta(task_id, state, final)

    def wait_for_pending(self, result: Any, callback: Any = None, propagate: bool = True, **kwargs: Any) -> Any:
        """A request's result is not published on Celery's channel: wait on its output queue instead."""
        if self.request_state(result.id) is None:
            try:
                return super().wait_for_pending(result, callback=callback, propagate=propagate, **kwargs)
            except Exception:
                # a failed parent's own error first, as `.get()` gives it when it sees the parent fail before its own
                # result (a chord whose header failed: the body's ChordError only names the header's error)
                check_parents = kwargs.get("on_interval")
                if check_parents is not None:
                    check_parents()
                raise
        self.wait_for_request(result.id, timeout=kwargs.get("timeout"), interval=kwargs.get("interval", 0.5))
        return result.maybe_throw(callback=callback, propagate=propagate)

    def wait_for_request(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict[str, Any]:
        """Wait for the request to end, woken by its output queue rather than by polling alone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            _, sink = self._request(task_id)
            seen = sink.last_index()  # before the state: an entry written in between wakes the wait below
            meta = self.get_task_meta(task_id, cache=False)
            if meta["status"] in states.READY_STATES:
                return meta
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


class ServiceControl(Control):
    """Celery's remote control, but revoke cancels the request through the queue service."""

    def revoke(
        self, task_id: str | Iterable[str], destination: Any = None, terminate: bool = False, signal: Any = None,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        """Cancel each queue-service request: a queued one leaves its queue, a running one is stopped by its worker
        (a training task's process group gets SIGTERM, then SIGKILL after the grace), whatever `terminate` says.
        Revoke the Celery calls Celery's way (a running one stops only with `terminate`)."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        calls = []
        for one in ids:
            if self.app.backend.request_state(one) is not None:
                self.app.backend.cancel(one)
            else:
                calls.append(one)
        if not calls:
            return [] if kwargs.get("reply") else None
        return super().revoke(calls, destination=destination, terminate=terminate, signal=signal, **kwargs)
