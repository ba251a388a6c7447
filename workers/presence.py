"""Worker presence, the write side: each worker publishes its state, pid, GPUs and the tasks it holds.

The record and its readers are core (scalablejob.store.presence); this is the reporter. A task is recorded when it is
received (its message is then in kombu's `unacked` hash) and dropped after it ran. The worker writes only its own
field, from one thread: it rewrites the field at each heartbeat with a new sequence number, so that readers tell a
live worker from a stale field by seeing it change (on their own clock: the heartbeat's wall time is shown, never
compared across hosts), and soon
after each change, at most once per PUBLISH_GAP_S. A task's receipt and end are not written on the task's path:
under a stream of short tasks one write covers many changes. Nothing waits on the record being that fresh: a
request whose message was just taken counts as backed by its unacked message (scaler/reconcile.py), and a worker
the scaler thinks idle that is in fact busy ends its tasks before it stops (warm shutdown).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis
from celery import signals

from scalablejob.host.gpus import own_gpus
from scalablejob.model import keys
from scalablejob.store.outage import OutageWarning
from scalablejob.store.presence import HEARTBEAT_S, Presence, WorkerState
from scalablejob.store.redis_url import connect
from scalablejob.workers.held import track_held_tasks

logger = logging.getLogger(__name__)

PUBLISH_GAP_S = 0.05  # the least time between two writes of the record, however often it changes


class PresenceReporter:
    """Keeps one worker's field true; every method is safe to call from any thread."""

    def __init__(
        self, client: redis.Redis, service: str, *, clock: Callable[[], float] = time.time,
        gpus: str | None = None, heartbeat_s: float = HEARTBEAT_S, publish_gap_s: float = PUBLISH_GAP_S,
    ) -> None:  # fmt: skip
        self._client = client
        self._key = keys.worker_presence(service)
        self._clock = clock
        self._heartbeat_s = heartbeat_s
        self._publish_gap_s = publish_gap_s
        visible = own_gpus(os.environ) if gpus is None else gpus
        self._presence = Presence("", os.getpid(), socket.gethostname(), WorkerState.STARTING, visible)
        self._held: dict[str, str] = {}  # changed in place on each task's path; the record is built when published
        self._lock = threading.Lock()
        self._stop_requested = False  # set from a signal handler: no lock, no I/O there
        self._wake = threading.Event()
        self._outage = OutageWarning(logger, "cannot publish worker presence")

    @property
    def presence(self) -> Presence:
        """The record as it stands now (it may not be published yet)."""
        with self._lock:
            return self._current(self._presence)

    def starting(self, name: str) -> None:
        """The worker knows its node name: publish it and keep it fresh until the worker is gone."""
        self._update(lambda presence: replace(presence, name=name))
        threading.Thread(target=self._beat, name="presence-heartbeat", daemon=True).start()

    def ready(self) -> None:
        self._update(lambda presence: replace(presence, state=WorkerState.IDLE))

    def received(self, task_id: str, delivery_tag: str) -> None:
        with self._lock:
            self._held[task_id] = delivery_tag
        self._wake.set()  # published soon, by the heartbeat thread

    def finished(self, task_id: str) -> None:
        with self._lock:
            self._held.pop(task_id, None)
        self._wake.set()

    def delivery_tag_of(self, task_id: str) -> str | None:
        """The delivery tag of the message a task this worker holds came from (None: it holds no such task)."""
        with self._lock:
            return self._held.get(task_id)

    def put_back(self, count: int, reason: str) -> None:
        """It has put `count` messages back on their queues so far, the latest for `reason`."""
        with self._lock:
            self._presence = replace(self._presence, put_back=count, put_back_reason=reason)
        self._wake.set()

    def stop_requested(self) -> None:
        """Called from the worker's SIGTERM handler: only flag it; the heartbeat thread publishes it."""
        self._stop_requested = True
        self._wake.set()

    def gone(self) -> None:
        """The worker shut down cleanly: its field goes, and the heartbeat must not bring it back."""
        with self._lock:
            name = self._presence.name
            self._presence = replace(self._presence, name="")
        self._wake.set()  # the heartbeat thread sees no name and ends
        if name:
            self._write(lambda: self._client.hdel(self._key, name))

    def _update(self, change: Callable[[Presence], Presence] = lambda presence: presence) -> None:
        """Apply a change and publish the record, under the lock: tasks are received and finished on other threads."""
        with self._lock:
            self._presence = self._current(change(self._presence))
            self._publish()

    def _current(self, presence: Presence) -> Presence:
        """`presence` with the tasks held now, and the state they make (call under the lock)."""
        presence = replace(presence, held=dict(self._held))
        return replace(presence, state=_state_of(presence, self._stop_requested))

    def _publish(self) -> None:
        presence = self._presence = replace(self._presence, heartbeat=self._clock(), seq=self._presence.seq + 1)
        if presence.name:
            self._write(lambda: self._client.hset(self._key, presence.name, presence.encode()))

    def _write(self, operation: Callable[[], object]) -> None:
        """Presence must never take a worker down: a Redis error is logged once per outage and skipped."""
        try:
            operation()
        except redis.RedisError as exc:
            self._outage.failed(exc)
        else:
            self._outage.succeeded()

    def _beat(self) -> None:
        while self._presence.name:
            self._wake.wait(self._heartbeat_s)
            self._wake.clear()
            self._update()
            time.sleep(self._publish_gap_s)  # changes made meanwhile go out together, in the next write


def _state_of(presence: Presence, stop_requested: bool) -> WorkerState:
    """Stopping wins; a worker that has not reported ready is starting; else busy while it holds a task."""
    if stop_requested:
        return WorkerState.STOPPING
    if presence.state is WorkerState.STARTING:
        return WorkerState.STARTING
    return WorkerState.BUSY if presence.held else WorkerState.IDLE


def install_presence(app: Any, service: str, broker_url: str) -> PresenceReporter:
    """Publish this worker's presence from Celery's signals (the worker process has one app, so globals are fine)."""
    reporter = PresenceReporter(connect(broker_url), service)

    def on_init(sender: object = None, **_: Any) -> None:
        reporter.starting(str(sender))

    signals.celeryd_init.connect(on_init, weak=False)
    signals.worker_ready.connect(lambda **_: reporter.ready(), weak=False)
    track_held_tasks(lambda req, _type: reporter.received(req.id, str(req.message.delivery_tag)), reporter.finished)
    signals.worker_shutting_down.connect(lambda **_: reporter.stop_requested(), weak=False)
    signals.worker_shutdown.connect(lambda **_: reporter.gone(), weak=False)
    return reporter
