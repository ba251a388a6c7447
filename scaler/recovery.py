"""Recovery: the requests whose worker died, or whose message was lost, go back on their queues to run once more.

kombu's Redis transport keeps every delivered, unacknowledged message in the hash `unacked` (delivery tag ->
[message, exchange, routing key]) and brings it back only after the visibility timeout, 30 days here on purpose
(celery #7924). The scaler owns the processes, so it knows when one died: it puts that worker's messages back at the
head of their queues at once. Each goes back with a new delivery tag, and the request's attempt is bumped, so a
worker that was only frozen can neither write (fencing, in the state scripts) nor, acknowledging its old tag,
remove the new delivery's entry. A message whose request already finished is only dropped.

The reconciler (`reconcile`) enforces the delivery invariant for everything else: a request still open but backed
by nothing (scaler.reconcile) is re-delivered from its unacknowledged message, or re-sent from the body kept in its
front end's input queue.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection, Mapping
from typing import Any, Protocol

import redis
from celery import Celery

from scalablejob.celery_app import service_queues
from scalablejob.client import request_message, send_message
from scalablejob.queues import message_task_id, priority_lists
from scalablejob.routing import TaskType
from scalablejob.scaler.reconcile import UNBACKED_AFTER_S, Backing, Unacked, reconcile, stale_acks
from scalablejob.sink import as_text
from scalablejob.state import RequestStore

logger = logging.getLogger(__name__)


class Recoverer(Protocol):
    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]: ...

    def reconcile(self, claimed: Collection[str], now: float, orphaned: Collection[str] = ()) -> list[str]: ...


class Recovery:
    """Puts back the messages of workers that died, and re-sends lost requests, through the service's Celery app."""

    def __init__(
        self, app: Celery, client: redis.Redis, service: str, *, unbacked_after_s: float = UNBACKED_AFTER_S
    ) -> None:
        self._app = app
        self._client = client
        self._service = service
        self._requests = RequestStore(client, service)
        self._queues = set(service_queues(service))
        self.unbacked_after_s = unbacked_after_s
        self._unbacked_since: dict[str, float] = {}

    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]:
        """Put back the messages a dead worker held (task id -> delivery tag); returns the task ids put back."""
        if not held:
            return []
        with self._app.connection_for_write() as connection:
            channel = connection.default_channel
            return [task_id for task_id, tag in held.items() if self._redeliver(channel, task_id, tag, reason)]

    def reconcile(self, claimed: Collection[str], now: float, orphaned: Collection[str] = ()) -> list[str]:
        """Re-send the open requests backed by nothing for `unbacked_after_s` (claimed: the ids live workers hold;
        orphaned: ids that a worker now silent, or on a lost host, held); drop the unacknowledged messages of requests
        that ended. Returns the ids re-sent."""
        with self._app.connection_for_write() as connection:
            channel = connection.default_channel
            backing = Backing(self._queued_ids(), set(claimed), self._unacked(channel), set(orphaned))
            open_ids = set(self._requests.open_request_ids())
            verdict = reconcile(open_ids, backing, self._unbacked_since, now, self.unbacked_after_s)
            self._unbacked_since = verdict.unbacked_since
            reason = f"backed by no message and no live worker for over {self.unbacked_after_s:g} s"
            sent = []
            for request_id in verdict.due:
                message = backing.unacked.get(request_id)
                if message is not None:
                    done = self._redeliver(channel, request_id, message.tag, reason)
                else:
                    done = self._resend(request_id, reason)
                if done:
                    sent.append(request_id)
                    self._unbacked_since.pop(request_id, None)
            for request_id in stale_acks(backing, open_ids, now, self.unbacked_after_s):
                self._drop_if_ended(channel, request_id, backing.unacked[request_id].tag)
        return sent

    # ---- the moves ---------------------------------------------------------------------------------------------

    def _redeliver(self, channel: Any, task_id: str, tag: str, reason: str) -> bool:
        """Move an unacknowledged message back to the head of its queue under a new delivery tag, and fence the old
        delivery; a message of a request that ended is dropped instead."""
        with channel.conn_or_acquire() as client:
            if not client.hexists(channel.unacked_key, tag):
                return False  # acknowledged (it finished) or already put back: nothing to do
            if self._drop_if_ended(channel, task_id, tag):
                return False
            if not self._requests.requeued(task_id, reason):
                return False
            client.transaction(lambda pipe: _move_back(channel, pipe, tag), channel.unacked_key)
        logger.warning("task %s is back on its queue: %s", task_id, reason)
        return True

    def _resend(self, request_id: str, reason: str) -> bool:
        """Send a lost request again from the body kept in its front end's input queue."""
        state = self._requests.get(request_id)
        if state is None or state.status.finished:
            return False
        entry = self._requests.input_entry(state)
        if entry is None or not self._requests.requeued(request_id, reason):
            return False
        frontend = state.frontend or self._service
        message = request_message(
            self._app, self._service, request_id, entry.data, entry.tags, TaskType(state.task_type), state.task,
            frontend,
        )  # fmt: skip
        send_message(self._client, self._service, message)
        logger.warning("request %s was sent again: %s", request_id, reason)
        return True

    def _drop_if_ended(self, channel: Any, task_id: str, tag: str) -> bool:
        state = self._requests.get(task_id)
        if state is not None and not state.status.finished:
            return False
        with channel.conn_or_acquire() as client:
            client.pipeline().zrem(channel.unacked_index_key, tag).hdel(channel.unacked_key, tag).execute()
        logger.info("task %s had ended: dropped its stale unacknowledged message", task_id)
        return True

    # ---- what backs the requests --------------------------------------------------------------------------------

    def _queued_ids(self) -> set[str]:
        ids: set[str] = set()
        for queue in self._queues:
            for key in priority_lists(queue):
                raw_messages: Any = self._client.lrange(key, 0, -1)
                ids.update(task_id for raw in raw_messages if (task_id := message_task_id(raw)))
        return ids

    def _unacked(self, channel: Any) -> dict[str, Unacked]:
        found: dict[str, Unacked] = {}
        with channel.conn_or_acquire() as client:
            scores: Any = client.zrange(channel.unacked_index_key, 0, -1, withscores=True)
            delivered = {as_text(tag): float(at) for tag, at in scores}
            for tag, raw in client.hscan_iter(channel.unacked_key, count=500):
                task_id = self._task_of(raw)
                if task_id is not None:
                    found[task_id] = Unacked(as_text(tag), delivered.get(as_text(tag), 0.0))
        return found

    def _task_of(self, raw: bytes | str) -> str | None:
        """The task id of an unacked entry of this service's queues; None for anything else."""
        try:
            message, _exchange, routing_key = json.loads(raw)
            if routing_key not in self._queues:
                return None
            return str(message["headers"]["id"])
        except (ValueError, KeyError, TypeError):
            return None


def _move_back(channel: Any, pipe: Any, tag: str) -> None:
    """Inside a WATCH on `unacked`: take the entry out and push its message, under a new delivery tag, at the head
    of its queue (kombu's restore_by_tag, which would keep the old tag)."""
    raw = pipe.hget(channel.unacked_key, tag)
    pipe.multi()
    pipe.zrem(channel.unacked_index_key, tag).hdel(channel.unacked_key, tag)
    if not raw:
        return
    payload, exchange, routing_key = json.loads(raw)
    payload["properties"]["delivery_tag"] = str(uuid.uuid4())
    payload["headers"]["redelivered"] = True
    priority = channel._get_message_priority(payload, reverse=False)
    for queue in channel._lookup(exchange, routing_key):
        pipe.rpush(channel._q_for_pri(queue, priority), json.dumps(payload))  # rpush: consumed next
