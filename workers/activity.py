"""The dashboard's activity (tasks started, finished, failed, their waits and run times), written by the worker in
batches rather than by each task's start and finish scripts (issue 26: four commands and their Lua per task).

The request state scripts count nothing for a worker's RequestStore; it counts into an ActivityTally
(scalablejob.model.history), and this flusher writes what was counted every FLUSH_S, in one round trip, and once
more when the worker shuts down. The leading scaler samples the counters once a second, so a sample shows a task at
most FLUSH_S later than it did. A worker killed -9 loses at most FLUSH_S of counts: dashboard figures, never a
request's state or result.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery import signals

from scalablejob.model.history import ActivityTally
from scalablejob.store.history import write_activity

logger = logging.getLogger(__name__)

FLUSH_S = 0.5  # the most a start or finish waits to be counted on the dashboard


class ActivityFlusher:
    """Writes a worker's tally every `flush_s` from a thread of its own, and what is left when stopped."""

    def __init__(self, client: redis.Redis, service: str, tally: ActivityTally, flush_s: float = FLUSH_S) -> None:
        self._client = client
        self._service = service
        self._tally = tally
        self._flush_s = flush_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activity-flush", daemon=True)
        self._failing = False

    def start(self) -> ActivityFlusher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Write what was counted since the last flush; the thread ends."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        else:
            self.flush()

    def flush(self) -> None:
        """Write what was counted since the last flush; a broker that is away keeps it for the next one."""
        batch = self._tally.take()
        if not batch:
            return
        try:
            write_activity(self._client, self._service, batch)
        except redis.RedisError as exc:
            self._tally.give_back(batch)
            if not self._failing:
                logger.warning("cannot write the dashboard's activity counts (will retry): %s", exc)
            self._failing = True
        else:
            self._failing = False

    def _run(self) -> None:
        while not self._stopped.wait(self._flush_s):
            self.flush()
        self.flush()


def install_activity(client: redis.Redis, service: str) -> ActivityTally:
    """A tally for the worker's request stores, flushed from now until the worker shuts down."""
    tally = ActivityTally()
    flusher = ActivityFlusher(client, service, tally).start()

    def on_shutdown(**_: Any) -> None:
        flusher.stop()

    signals.worker_shutdown.connect(on_shutdown, weak=False)
    return tally
