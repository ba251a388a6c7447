"""The dashboard's activity (tasks started, finished, failed, their waits and run times), written by the worker in
batches rather than by each task's start and finish scripts (issue 26: four commands and their Lua per task).

The request state scripts count nothing for a worker's RequestStore; it counts into an ActivityTally
(scalablejob.model.history), and this flusher writes what was counted every FLUSH_S, in one round trip, and once
more when the worker shuts down. FLUSH_S is the leading scaler's pass interval and the flushes keep to their own
beat (no drift): a sample, taken on a pass at most once a second, then holds as many flushes as its own length
holds beats, and a steady load shows as a steady rate. A sample shows a task at most FLUSH_S later than it did. A
worker killed -9 loses at most FLUSH_S of counts; a write whose reply was lost may count a flush twice, and a finish
whose reply was lost and was sent again finds the request ended and is not counted: dashboard figures, never a
request's state or result.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery import signals

from scalablejob.model.history import ActivityTally
from scalablejob.store.history import write_activity
from scalablejob.store.outage import OutageWarning

logger = logging.getLogger(__name__)

FLUSH_S = 0.25  # the most a start or finish waits to be counted on the dashboard: the scaler's pass interval
STOP_WAIT_S = 5.0  # the most a worker's shutdown waits for the last flush (a broker that does not answer)


class ActivityFlusher:
    """Writes a worker's tally every `flush_s` from a thread of its own, and what is left when stopped."""

    def __init__(self, client: redis.Redis, service: str, tally: ActivityTally, flush_s: float = FLUSH_S) -> None:
        self._client = client
        self._service = service
        self._tally = tally
        self._flush_s = flush_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activity-flush", daemon=True)
        self._outage = OutageWarning(logger, "cannot write the dashboard's activity counts")

    def start(self) -> ActivityFlusher:
        self._thread.start()
        return self

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Write what was counted since the last flush (waiting at most `wait_s` for it); the thread ends."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(wait_s)
        else:
            self.flush()

    def flush(self) -> None:
        """Write what was counted since the last flush; a broker that is away keeps it for the next one."""
        batch = self._tally.take()
        if not batch:
            return
        try:
            write_activity(self._client, self._service, batch)
        except Exception as exc:  # a broker away, or a bug: the counts wait for the next flush, the thread goes on
            self._tally.give_back(batch)
            self._outage.failed(exc)
        else:
            self._outage.succeeded()

    def _run(self) -> None:
        beat = time.monotonic()
        while True:
            beat = max(beat + self._flush_s, time.monotonic())  # the next beat; one missed is skipped, not caught up
            if self._stopped.wait(beat - time.monotonic()):
                break
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
