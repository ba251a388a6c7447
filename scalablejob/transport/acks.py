"""Acknowledgements the transport makes outside kombu's own path: those a task's finish made in its final script,
and those made after the channel's connection dropped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from scalablejob.store.redis_url import connect
from scalablejob.store.state import UnackedMessage

logger = logging.getLogger(__name__)


class FinishAcks:
    """The messages of this worker's tasks, acknowledged in Redis by the script that writes the request's final entry
    (state_finish.lua), which saves each task a round trip and kombu's pipeline. kombu's own ack then only updates
    the channel's bookkeeping. `tag_of` says which message a task held now came from (the worker's presence record
    keeps that map). Every method is safe from any thread."""

    def __init__(self, tag_of: Callable[[str], str | None]) -> None:
        self._tag_of = tag_of
        self._lock = threading.Lock()
        self._acknowledged: set[str] = set()  # tags a finish acknowledged, until kombu's ack of them
        self.keys = (UnackedMessage.unacked_key, UnackedMessage.unacked_index_key)  # the channel's, once known

    def message_of(self, task_id: str) -> UnackedMessage | None:
        """The message a running task came from, for its finish to acknowledge; None if the task was not received
        through this worker's consumer (then kombu acknowledges it as usual)."""
        tag = self._tag_of(task_id)
        return None if tag is None else UnackedMessage(tag, *self.keys)

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
