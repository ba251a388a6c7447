"""Acknowledgements the transport makes outside kombu's own path: those a task's finish made in its final script,
and those made after the channel's connection dropped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection

import redis

from scalablejob.store.redis_url import connect
from scalablejob.store.state import UnackedMessage

logger = logging.getLogger(__name__)


class FinishAcks:
    """The messages of this worker's tasks, acknowledged in Redis by the script that writes the request's final entry
    (state_finish.lua), which saves each task a round trip and kombu's pipeline. kombu's own ack then only updates
    the channel's bookkeeping. `tag_of` says which message a task held now came from (the worker's presence record
    keeps that map). Every method is safe from any thread.

    A message of a task named in `record_at_start` (one that only runs as a request, through its request's start:
    scalablejob.workers.runtime) is not recorded as unacknowledged on receipt: its record waits here
    (`hold`) until its task starts, whose script records it in the same round trip (state_start.lua), or until kombu
    acknowledges (nothing to write) or rejects it (written first, so a requeue finds it), or the consumer stops
    (`unrecorded`, written then). A worker killed in between loses no request: the reconciler re-sends one that no
    message backs (scaler/reconcile.py), as it does for kombu's own gap between taking a message and recording it."""

    def __init__(self, tag_of: Callable[[str], str | None], *, record_at_start: Collection[str] = ()) -> None:
        self._tag_of = tag_of
        self._lock = threading.Lock()
        self._acknowledged: set[str] = set()  # tags a finish acknowledged, until kombu's ack of them
        self._unrecorded: dict[str, tuple[float, str]] = {}  # tag -> (delivered at, the message as kombu stores it)
        self.record_at_start = record_at_start
        self.keys = (UnackedMessage.unacked_key, UnackedMessage.unacked_index_key)  # the channel's, once known

    def message_of(self, task_id: str) -> UnackedMessage | None:
        """The message a running task came from, for its finish to acknowledge (and its start to record, if it is not
        recorded yet); None if the task was not received through this worker's consumer (then kombu acknowledges it
        as usual)."""
        tag = self._tag_of(task_id)
        if tag is None:
            return None
        with self._lock:
            held = self._unrecorded.get(tag)
        if held is None:
            return UnackedMessage(tag, *self.keys)
        return UnackedMessage(tag, *self.keys, record=held[1], delivered_at=held[0])

    def hold(self, delivery_tag: str, delivered_at: float, stored: str) -> None:
        """A message taken: its unacknowledged record waits for its task's start."""
        with self._lock:
            self._unrecorded[delivery_tag] = (delivered_at, stored)

    def recorded(self, message: UnackedMessage) -> None:
        """A start recorded the message."""
        with self._lock:
            self._unrecorded.pop(message.tag, None)

    def unrecorded(self, delivery_tag: str | None = None) -> dict[str, tuple[float, str]]:
        """Take the record of one message (or of all) still waiting: tag -> (delivered at, stored message)."""
        with self._lock:
            if delivery_tag is None:
                taken, self._unrecorded = self._unrecorded, {}
                return taken
            held = self._unrecorded.pop(delivery_tag, None)
        return {} if held is None else {delivery_tag: held}

    def acknowledged(self, message: UnackedMessage) -> None:
        """A finish wrote the final entry and removed the message from Redis."""
        with self._lock:
            self._acknowledged.add(message.tag)

    def take(self, delivery_tag: str) -> bool:
        """Whether kombu's ack or reject of this tag has nothing left to do in Redis (and forget the tag)."""
        with self._lock:
            if delivery_tag not in self._acknowledged:
                return False
            self._acknowledged.discard(delivery_tag)
            return True


class DirectAcks:
    """Acknowledges a message as kombu's Redis QoS does (remove it from `unacked` and its index), on a client of its
    own, made when first needed: for acks made after the channel's connection dropped."""

    def __init__(self, broker_url: str, unacked_key: str, unacked_index_key: str) -> None:
        self._url = broker_url
        self._keys = (unacked_key, unacked_index_key)
        self._client: redis.Redis | None = None

    def ack(self, delivery_tag: str) -> None:
        unacked, index = self._keys
        try:
            self._client = self._client or connect(self._url)
            with self._client.pipeline() as pipe:
                pipe.zrem(index, delivery_tag)
                pipe.hdel(unacked, delivery_tag)
                pipe.execute()
        except redis.RedisError as exc:  # the scaler drops the entry of a finished request when it sweeps
            logger.warning("could not acknowledge message %s after its channel closed: %s", delivery_tag, exc)
