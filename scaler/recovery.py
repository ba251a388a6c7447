"""Crash recovery: the tasks a dead worker held go back on their queues at once, to run once more, not twice.

kombu's Redis transport keeps every delivered, unacknowledged message in the hash `unacked` (delivery tag ->
[message, exchange, routing key]) and brings it back only after the visibility timeout, 30 days here on
purpose (celery #7924). The scaler owns the processes, so it knows when one died: it restores that worker's
messages with kombu's own `restore_by_tag`, which moves the entry from `unacked` (and `unacked_index`) back to
the head of its queue in one transaction, and records the retry in the request's state. A message whose
request already finished (the worker died between writing the result and acknowledging) is only dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from typing import Any, Protocol

import redis
from celery import Celery

from scalablejob.celery_app import service_queues
from scalablejob.state import RequestStore

logger = logging.getLogger(__name__)

ORPHAN_AGE_S = 60.0  # an unacked message nobody claims for this long lost its worker before it was recorded


class Recoverer(Protocol):
    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]: ...

    def sweep(self, claimed: Collection[str], now: float) -> list[str]: ...


class Recovery:
    """Puts back the messages of workers that died, through a kombu channel of the service's Celery app."""

    def __init__(self, app: Celery, client: redis.Redis, service: str) -> None:
        self._app = app
        self._requests = RequestStore(client, service)
        self._queues = set(service_queues(service))

    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]:
        """Restore the messages a dead worker held (task id -> delivery tag); returns the task ids put back."""
        if not held:
            return []
        with self._app.connection_for_write() as connection:
            channel = connection.default_channel
            return [task_id for task_id, tag in held.items() if self._restore(channel, task_id, tag, reason)]

    def sweep(self, claimed: Collection[str], now: float) -> list[str]:
        """Restore this service's unacked messages that no worker claims and that are older than ORPHAN_AGE_S.

        They belong to a worker that died between receiving a message and publishing that it holds it.
        """
        with self._app.connection_for_write() as connection:
            channel = connection.default_channel
            orphans = self._orphans(channel, set(claimed), now)
            reason = f"unacknowledged for over {ORPHAN_AGE_S:g} s with no live worker holding it"
            return [task_id for task_id, tag in orphans if self._restore(channel, task_id, tag, reason)]

    def _restore(self, channel: Any, task_id: str, tag: str, reason: str) -> bool:
        with channel.conn_or_acquire() as client:
            if not client.hexists(channel.unacked_key, tag):
                return False  # acknowledged (it finished) or already restored: nothing to do
            state = self._requests.get(task_id)
            if state is not None and state.status.finished:
                client.pipeline().zrem(channel.unacked_index_key, tag).hdel(channel.unacked_key, tag).execute()
                logger.info("task %s had finished before its worker died: dropped its stale unacked entry", task_id)
                return False
        channel.qos.restore_by_tag(tag, leftmost=False)  # rpush: the head of the queue, consumed next
        self._requests.requeued(task_id, reason)
        logger.warning("task %s is back on its queue: %s", task_id, reason)
        return True

    def _orphans(self, channel: Any, claimed: set[str], now: float) -> list[tuple[str, str]]:
        found = []
        with channel.conn_or_acquire() as client:
            for tag, raw in client.hscan_iter(channel.unacked_key, count=500):
                task_id = self._task_of(raw)
                if task_id is None or task_id in claimed:
                    continue
                delivered_at = client.zscore(channel.unacked_index_key, tag)
                if delivered_at is not None and now - float(delivered_at) >= ORPHAN_AGE_S:
                    found.append((task_id, tag.decode() if isinstance(tag, bytes) else str(tag)))
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
