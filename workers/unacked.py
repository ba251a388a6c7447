"""Unacknowledged messages: acknowledged with the request's final entry, and kept across a broker outage until their
task ends."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from kombu.transport.virtual.base import QoS as VirtualQoS
from kombu.utils.json import dumps

from scalablejob.lua import lua_script
from scalablejob.redis_url import connect
from scalablejob.state import UnackedMessage

logger = logging.getLogger(__name__)


def one_client(channel: Any) -> None:
    """kombu's Redis channel builds a new redis.Redis (and its table of a few hundred response callbacks) for each
    message it receives and each it acknowledges: a fifth of a short task's CPU here. One client, safe to share
    across threads as it draws its connections from the channel's pool, serves them all. (The client that BRPOPs,
    built with `asynchronous=True`, stays kombu's own.)"""
    create = channel._create_client
    shared = create()

    def created(asynchronous: bool = False) -> Any:
        return create(asynchronous) if asynchronous else shared

    channel._create_client = created


def record_in_one_call(channel: Any) -> None:
    """Record each message the channel takes as unacknowledged with one script call (unacked_record.lua) instead of
    kombu's MULTI/ZADD/HSET/EXEC: the same keys and format, so kombu's restore and ack work on it unchanged; on
    the consumer thread, which fetches the next task, it is the heaviest step of a short task."""
    qos = channel.qos
    record = channel._create_client().register_script(lua_script("unacked_record.lua", "scalablejob.workers"))

    def append(message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        stored = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        record(keys=[qos.unacked_index_key, qos.unacked_key], args=[delivery_tag, time.time(), stored])
        VirtualQoS.append(qos, message, delivery_tag)

    qos.append = append


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


def outlive_the_channel(channel: Any, broker_url: str, acks: FinishAcks | None = None) -> None:
    """Let the tasks that run while the broker connection drops finish as if it had not.

    When the connection drops, Celery closes the channel, and kombu restores every unacknowledged message to its
    queue: a training job that rides out a Redis restart would also start again elsewhere (and the restore, against
    a broker that is away, can crash the worker: kombu #582, #970). So the messages stay in `unacked`. A task that
    finishes later acknowledges through a channel that has no connection any more (kombu then raises
    AttributeError in the consumer, which ends the worker): its ack and reject go straight to Redis instead. A
    reject that cannot be made leaves the message in `unacked`, for the scaler to put back. With `acks`, a message
    its task's finish acknowledged is only dropped from the channel's bookkeeping (its request has ended: nothing
    to requeue either)."""
    channel.do_restore = False
    qos = channel.qos
    ack, reject = qos.ack, qos.reject
    direct = _DirectAcks(broker_url, qos.unacked_key, qos.unacked_index_key)
    if acks is not None:
        acks.keys = (qos.unacked_key, qos.unacked_index_key)

    def ack_anyway(delivery_tag: str) -> None:
        if acks is not None and acks.take(delivery_tag):
            VirtualQoS.ack(qos, delivery_tag)
        elif channel.connection is not None:
            ack(delivery_tag)
        else:
            direct.ack(delivery_tag)

    def reject_anyway(delivery_tag: str, requeue: bool = False) -> None:
        if acks is not None and acks.take(delivery_tag):
            VirtualQoS.ack(qos, delivery_tag)
        elif channel.connection is not None:
            reject(delivery_tag, requeue=requeue)
        elif not requeue:
            direct.ack(delivery_tag)
        else:
            logger.warning("message %s stays unacknowledged: its channel closed; the scaler puts it back", delivery_tag)

    qos.ack, qos.reject = ack_anyway, reject_anyway


class _DirectAcks:
    """Acknowledges a message as kombu's Redis QoS does (remove it from `unacked` and its index), on a client of its
    own, made when first needed."""

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
