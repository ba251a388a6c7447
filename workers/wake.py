"""A freed slot takes the next task at once: the consumer's pending BRPOP is woken when a hidden queue reopens.

The idle-first gate (workers/gate.py, on the transport's channel) leaves a queue out of the consumer's BRPOP while
its type has no free slot. When a task ends, its slot frees, but the BRPOP already sent listens only to the other
queues: it would take the freed queue's next message only once it times out. So the BRPOP's connection is known by
its Redis client id, and the task's thread ends that wait with `CLIENT UNBLOCK id TIMEOUT`: Redis answers the BRPOP
as a timeout at once, and kombu sends the next BRPOP, which includes the reopened queue. The short BRPOP timeout
stays as a fallback for the rare race where the unblock reaches Redis before the BRPOP it meant to end.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from scalablejob.store.redis_url import connect

logger = logging.getLogger(__name__)

UNBLOCK_TRIES = 5  # an unblock that found no blocked BRPOP is tried again, while that BRPOP is still pending
UNBLOCK_RETRY_S = 0.002


class BrpopWaker:
    """Ends the consumer's pending BRPOP when a slot frees; every method is safe from any thread."""

    def __init__(self, broker_url: str) -> None:
        self._url = broker_url
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        self._pending: int | None = None  # client id of a BRPOP sent while some queue was hidden, until it returns

    @property
    def pending(self) -> int | None:
        """The client id a wake-up would unblock now, if any."""
        with self._lock:
            return self._pending

    def sent(self, client_id: int) -> None:
        """The consumer is about to send a BRPOP that may leave a queue out: a freed slot wakes it from now on."""
        with self._lock:
            self._pending = client_id

    def returned(self) -> None:
        """The consumer read its BRPOP's answer: nothing to wake until it sends the next one."""
        with self._lock:
            self._pending = None

    def wake(self) -> None:
        """A slot freed: end the pending BRPOP, so the next one listens to its queue again."""
        with self._lock:
            pending = self._pending
        tries = 0
        while pending is not None and tries < UNBLOCK_TRIES:
            try:
                self._client = self._client or connect(self._url)
                if self._client.execute_command("CLIENT", "UNBLOCK", pending, "TIMEOUT"):
                    return
            except redis.RedisError as exc:  # the fallback timeout still reopens the queue
                logger.debug("could not wake the consumer: %s", exc)
                return
            tries += 1
            time.sleep(UNBLOCK_RETRY_S)  # the BRPOP may not have reached Redis yet
            with self._lock:
                pending = self._pending if self._pending == pending else None
