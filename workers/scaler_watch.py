"""A worker whose scaler is gone takes no new task: it warm-stops itself (issue 22, DESIGN "Delivery guarantees").

A scaler that dies (kill -9) while its workers live leaves nobody to stop them, and the leader gives its host's
share to the other hosts: the workers must go. Each worker started by a scaler watches its scaler's lease (one
per service and host, scaler.records): while no live scaler holds it (the key is gone, its TTL running on the
Redis server's clock, or its holder's process, on this very host, has ended) for `grace_s` of the worker's own
monotonic clock, the scaler is gone; a restarted scaler that takes the lease meanwhile adopts the worker instead.
The worker then stops as at scale-down (SIGTERM: Celery's warm shutdown finishes the running task, takes no new
one, and the presence record says `stopping`).

While Redis does not answer, the lease cannot be read: the watch then judges by the holder it saw last (at first,
the process that started the worker: its scaler, or the scaler's fork server, which ends with it). A broker outage
alone stops nothing; an outage in which that scaler has also ended does, after the same grace: a worker whose Redis
and scaler are both gone for good (a stack stopped while it started, waiting for its broker) would otherwise wait
for ever. A scaler restarted during an outage loses such a worker (its running task still finishes first).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import psutil
import redis

from scalablejob.host.processes import WORKER_NAME_ENV, holder_alive, holder_identity
from scalablejob.model import keys
from scalablejob.model.freshness import held_since
from scalablejob.store.presence import scaler_host_of
from scalablejob.store.redis_url import connect

logger = logging.getLogger(__name__)

SCALER_GONE_AFTER_S = 5.0  # a scaler restarted within this (systemd: RestartSec=2) finds its workers still there
CHECK_EVERY_S = 1.0


class ScalerWatch:
    """Calls `on_gone` once when the lease of this worker's scaler has had no live holder for `grace_s`."""

    def __init__(
        self, client: redis.Redis, service: str, host: str, on_gone: Callable[[], None], *,
        grace_s: float = SCALER_GONE_AFTER_S, alive: Callable[[bytes | None], bool] = holder_alive,
        last_holder: bytes | None = None,
    ) -> None:  # fmt: skip
        self._client = client
        self._last_holder = last_holder  # the lease's value last read (a scaler's identity), for when Redis is silent
        self._key = keys.scaler_lease(service, host)
        self._on_gone = on_gone
        self._grace_s = grace_s
        self._alive = alive
        self._since: float | None = None  # since when no live scaler held the lease, on every check
        self.fired = False

    def check(self, now: float) -> bool:
        """One look at the lease (`now`: this worker's monotonic clock); True once the scaler is judged gone."""
        if self.fired:
            return True
        try:
            raw: bytes | None = self._client.get(self._key)  # type: ignore[assignment]
        except redis.RedisError:
            raw = self._last_holder  # silence of Redis is not the scaler's: ask whether the one seen last still runs
            if raw is None:
                return False
        else:
            self._last_holder = raw if raw is not None else self._last_holder
        self._since = held_since(self._since, not self._alive(raw), now)
        if self._since is None or now - self._since < self._grace_s:
            return False
        logger.warning(
            "the scaler of this worker (lease %s) has been gone for %.0f s: taking no new task and stopping (warm "
            "shutdown); the other hosts take over its share", self._key, now - self._since,
        )  # fmt: skip
        self.fired = True
        self._on_gone()
        return True

    def run(self, every_s: float = CHECK_EVERY_S) -> None:
        while not self.check(time.monotonic()):
            time.sleep(every_s)


def warm_stop_self() -> None:
    """What the scaler's scale-down sends: Celery's warm shutdown, handled on the main thread."""
    os.kill(os.getpid(), signal.SIGTERM)


def install_scaler_watch(service: str, broker_url: str) -> ScalerWatch | None:
    """Watch the scaler that started this worker (named in its environment) when it runs on this host; None for a
    worker started by hand, and for a pod's worker (`POD@NAMESPACE`): its scaler runs in another pod, whose process
    this worker cannot see, and its pod lives until that scaler (or its next leader) deletes it."""
    host = scaler_host_of(os.environ.get(WORKER_NAME_ENV, ""))
    if host is None or host != socket.gethostname():
        return None
    watch = ScalerWatch(connect(broker_url), service, host, warm_stop_self, last_holder=_parent_identity())
    threading.Thread(target=watch.run, name="scaler-watch", daemon=True).start()
    return watch


def _parent_identity() -> bytes | None:
    """The process that started this worker, as a lease names its holder: the scaler (or its fork server)."""
    try:
        parent = psutil.Process(os.getppid())
        return holder_identity(parent.pid, parent.create_time()).encode()
    except psutil.Error:
        return None
