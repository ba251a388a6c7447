"""Early wake-up on new work: what the service's producers publish when they queue a task.

A put (and the reconciler's re-send) publishes the queue on the service's task-sent channel (keys.task_sent_channel)
in the same step that queues the message. A task sent through Celery itself (`app.send_task`, a retry) is
followed by Celery's `task-sent` event on the `celeryev` fanout exchange (the app sets `task_send_sent_event`),
which kombu's Redis transport carries as a Redis PUBLISH. Listening to both costs one pub/sub connection and a
thread, and lets the scaler react to a burst at once instead of at its next pass. Anything unexpected only wakes
the loop (or, if nothing comes, the loop still observes every interval).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection

import redis

from scalablejob.model import keys
from scalablejob.transport.message import published_body, task_sent_pattern

logger = logging.getLogger(__name__)

TASK_SENT_PATTERN = task_sent_pattern()
RETRY_S = 1.0
READ_TIMEOUT_S = 0.25  # how long stop() may wait for the thread


def is_for(message: bytes | str, queues: Collection[str]) -> bool:
    """Whether a published task-sent event names one of `queues`; an event that cannot be read counts as yes."""
    try:
        return published_body(message).get("queue") in queues
    except (ValueError, KeyError, TypeError, AttributeError):
        return True


class TaskSentListener:
    """A daemon thread that calls `wake()` whenever a task is sent to one of the service's queues."""

    def __init__(self, client: redis.Redis, service: str, queues: Collection[str], wake: Callable[[], None]) -> None:
        self._client = client
        self._channel = keys.task_sent_channel(service)
        self._queues = set(queues)
        self._wake = wake
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="task-sent-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop listening; returns once the thread is done with the connection."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(RETRY_S + READ_TIMEOUT_S + 1)

    def _listen(self) -> None:
        while not self._stopped.is_set():
            try:
                self._follow()
            except redis.RedisError as exc:
                logger.debug("task-sent events unavailable, retrying in %g s: %s", RETRY_S, exc)
                self._stopped.wait(RETRY_S)

    def _follow(self) -> None:
        with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
            pubsub.psubscribe(TASK_SENT_PATTERN)
            pubsub.subscribe(self._channel)
            while not self._stopped.is_set():
                message = pubsub.get_message(timeout=READ_TIMEOUT_S)
                if message is None:
                    continue
                if message["type"] == "message" or is_for(message["data"], self._queues):
                    self._wake()  # the service's own channel names only its queues
