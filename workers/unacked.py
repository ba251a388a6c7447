"""Unacknowledged messages across a broker outage: they stay where they are until their task ends."""

from __future__ import annotations

import logging
from typing import Any

import redis

from scalablejob.redis_url import connect

logger = logging.getLogger(__name__)


def outlive_the_channel(channel: Any, broker_url: str) -> None:
    """Let the tasks that run while the broker connection drops finish as if it had not.

    When the connection drops, Celery closes the channel, and kombu restores every unacknowledged message to its
    queue: a training job that rides out a Redis restart would also start again elsewhere (and the restore, against
    a broker that is away, can crash the worker: kombu #582, #970). So the messages stay in `unacked`. A task that
    finishes later acknowledges through a channel that has no connection any more (kombu then raises
    AttributeError in the consumer, which ends the worker): its ack and reject go straight to Redis instead. A
    reject that cannot be made leaves the message in `unacked`, for the scaler to put back."""
    channel.do_restore = False
    qos = channel.qos
    ack, reject = qos.ack, qos.reject
    direct = _DirectAcks(broker_url, qos.unacked_key, qos.unacked_index_key)

    def ack_anyway(delivery_tag: str) -> None:
        if channel.connection is not None:
            ack(delivery_tag)
        else:
            direct.ack(delivery_tag)

    def reject_anyway(delivery_tag: str, requeue: bool = False) -> None:
        if channel.connection is not None:
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
