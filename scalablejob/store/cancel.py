"""Cancelling a request: a queued one is taken off its queue, a running one is stopped by its worker."""

from __future__ import annotations

from enum import Enum
from typing import Any

import redis

from scalablejob.model.errors import RequestError
from scalablejob.model.routing import TaskType, queue_for
from scalablejob.store.queues import message_task_id, priority_lists
from scalablejob.store.sink import EntryType, Sink, entry_tags
from scalablejob.store.state import RequestStatus, RequestStore

NOT_STARTED = "cancelled before it started"
WHILE_RUNNING = "cancelled while running"


class CancelOutcome(str, Enum):
    REMOVED = "removed from its queue"
    STOPPING = "its worker is stopping it"  # the worker polls the flag and signals the job's process group


def end_cancelled(sink: Sink, requests: RequestStore, request_id: str, task_type: str, how: str = NOT_STARTED) -> None:
    """A cancelled request without a result ends with an `error` entry in `sink` (its front end's output queue), so
    a reader learns what happened; `how` says whether it never started or stopped while running."""
    tags = entry_tags(request_id, task_type, EntryType.ERROR, cancelled="true")
    requests.finish(sink, request_id, RequestStatus.CANCELLED, how.encode(), tags, error=how)


def remove_queued(client: redis.Redis, queue: str, request_id: str) -> bool:
    """Take the message of `request_id` off a Celery queue; False if a worker has already taken it."""
    for key in priority_lists(queue):
        raw_messages: Any = client.lrange(key, 0, -1)
        for raw in raw_messages:
            if message_task_id(raw) == request_id:
                return bool(client.lrem(key, 1, raw))
    return False


def cancel_request(client: redis.Redis, service: str, request_id: str) -> CancelOutcome:
    """Cancel a queued or running request of `service`; an unknown or finished one is a RequestError."""
    requests = RequestStore(client, service)
    state = requests.require(request_id)
    if state.status.finished:
        raise RequestError(f"request {request_id} already ended {state.status.value}: nothing to cancel")
    requests.request_cancel(request_id)  # first: a worker that takes it from now on will not run it
    queue = queue_for(service, TaskType(state.task_type))
    if state.status is RequestStatus.QUEUED and remove_queued(client, queue, request_id):
        # the entry goes to the output queue of the front end the request came through
        end_cancelled(Sink(client, service, frontend=state.frontend), requests, request_id, state.task_type)
        return CancelOutcome.REMOVED
    return CancelOutcome.STOPPING
