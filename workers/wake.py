"""A freed slot takes the next task at once: the consumer's pending BRPOP is woken when a hidden queue reopens.

The idle-first gate (workers/gate.py, on the transport's channel) leaves a queue out of the consumer's BRPOP while
its type has no free slot. When a task ends, its slot frees, but the BRPOP already sent listens only to the other
queues: it would take the freed queue's next message only once it times out. So the BRPOP's connection is known by
its Redis client id, and the task's thread ends that wait with `CLIENT UNBLOCK id TIMEOUT`: Redis answers the BRPOP
as a timeout at once, and kombu sends the next BRPOP, which includes the reopened queue. The short BRPOP timeout
stays as a fallback for the rare race where the unblock reaches Redis before the BRPOP it meant to end.

Most tasks are short: the slot frees a few milliseconds after it filled. So a BRPOP that would leave a queue out is
first held back, for at most HOLD_BACK_S, on the consumer's event loop (`attach`): a slot that frees meanwhile ticks
the loop through a pipe of this process, and the next BRPOP listens to every queue. Such a task costs Redis no
gated BRPOP and no CLIENT UNBLOCK, two round trips of the seven a task took (issue 26); a task of the other type
that arrives while one runs waits at most HOLD_BACK_S longer. Nothing else changes: the gate still decides which
queues a BRPOP listens to, and no message is taken while its type has no free slot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

import redis

from scalablejob.store.redis_url import connect

logger = logging.getLogger(__name__)

UNBLOCK_TRIES = 5  # an unblock that found no blocked BRPOP is tried again, while that BRPOP is still pending
UNBLOCK_RETRY_S = 0.002
HOLD_BACK_S = 0.02  # the most a BRPOP that leaves a queue out waits for a slot to free before it goes out


class BrpopWaker:
    """Ends the consumer's pending BRPOP when a slot frees; every method is safe from any thread."""

    def __init__(self, broker_url: str) -> None:
        self._url = broker_url
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        self._pending: int | None = None  # client id of a BRPOP sent while some queue was hidden, until it returns
        self._hub: Any = None  # the consumer's event loop, once attached
        self._pipe: tuple[int, int] | None = None  # (read, write): a byte written ticks the event loop
        self._held_back = False  # the consumer sent no BRPOP while a queue was hidden: a freed slot ticks its loop
        self._hidden_since: float | None = None  # when the consumer first held a BRPOP back (its thread only)

    def attach(self, hub: Any) -> None:
        """The consumer's event loop (kombu's hub), on each start of the consumer: from now on a BRPOP that would leave
        a queue out may be held back (`hold_back`)."""
        if self._pipe is None:
            read, write = os.pipe()
            os.set_blocking(read, False)
            os.set_blocking(write, False)
            self._pipe = (read, write)
        self._hub = hub
        hub.add_reader(self._pipe[0], self._drain)

    def hold_back(self, hidden: bool) -> bool:
        """Asked by the channel before it sends a BRPOP: True when it sends none now, because some queue is `hidden`
        and the hold has not lasted HOLD_BACK_S yet; the loop ticks again when a slot frees (`wake`) or the hold is
        over. The channel then asks its gate once more: a slot that freed before this call woke nothing."""
        hub = self._hub
        if not hidden or hub is None:
            self._hidden_since = None  # every queue is heard (or no loop to tick): the next hidden period holds again
            return False
        now = time.monotonic()
        if self._hidden_since is None:
            self._hidden_since = now
            hub.call_later(HOLD_BACK_S, _tick)  # the loop asks again once the hold is over
        elif now - self._hidden_since >= HOLD_BACK_S:
            return False
        with self._lock:
            self._held_back = True
            self._pending = None  # no BRPOP goes out: nothing to unblock
        return True

    @property
    def pending(self) -> int | None:
        """The client id a wake-up would unblock now, if any."""
        with self._lock:
            return self._pending

    def sent(self, client_id: int) -> None:
        """The consumer is about to send a BRPOP that may leave a queue out: a freed slot wakes it from now on."""
        with self._lock:
            self._pending = client_id
            self._held_back = False

    def returned(self) -> None:
        """The consumer read its BRPOP's answer: nothing to wake until it sends the next one."""
        with self._lock:
            self._pending = None

    def wake(self) -> None:
        """A slot freed: end the pending BRPOP, so the next one listens to its queue again."""
        with self._lock:
            pending = self._pending
            held_back, self._held_back = self._held_back, False
        if held_back and self._pipe is not None:
            with contextlib.suppress(BlockingIOError):  # a full pipe has a tick due already
                os.write(self._pipe[1], b"w")
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

    def _drain(self) -> None:
        """On the event loop: the pipe woke it (its next tick sends the BRPOP); empty it."""
        if self._pipe is not None:
            with contextlib.suppress(BlockingIOError):
                os.read(self._pipe[0], 4096)


def _tick() -> None:
    """A timer's callback that only makes the event loop tick."""
