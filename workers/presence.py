"""Worker presence: each worker publishes its state, pid, GPUs and the tasks it holds to one Redis hash per service.

The scaler reads it to count tasks in flight, to tell idle workers from busy ones, and, when a worker dies, to
know which messages (kombu delivery tags) that worker held, so it can put exactly those back on their queues.
A task is recorded when it is received (its message is then in kombu's `unacked` hash) and dropped after it
ran. The worker writes only its own field; a heartbeat thread rewrites it so that stale fields can be told apart.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import redis
from celery import signals

from scalablejob import keys
from scalablejob.gpus import CUDA_VISIBLE_DEVICES
from workers.held import track_held_tasks

logger = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
STALE_AFTER_S = 5 * HEARTBEAT_S  # a field not rewritten for this long belongs to a worker that is gone or frozen


class WorkerState(str, Enum):
    """Where a worker is in its life, as the worker itself sees it."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Presence:
    """One worker's published state; `held` maps each task id it holds to its kombu delivery tag."""

    name: str
    pid: int
    host: str
    state: WorkerState
    gpus: str = ""
    held: Mapping[str, str] = field(default_factory=dict)
    heartbeat: float = 0.0

    def encode(self) -> str:
        fields = {"pid": self.pid, "host": self.host, "state": self.state.value, "gpus": self.gpus}
        return json.dumps({**fields, "held": dict(self.held), "heartbeat": self.heartbeat})

    @classmethod
    def decode(cls, name: str, raw: str | bytes) -> Presence:
        data = json.loads(raw)
        return cls(
            name, int(data["pid"]), str(data["host"]), WorkerState(data["state"]), str(data.get("gpus", "")),
            {str(k): str(v) for k, v in data.get("held", {}).items()}, float(data.get("heartbeat", 0.0)),
        )  # fmt: skip

    def is_fresh(self, now: float) -> bool:
        """Whether the worker rewrote its field recently (it is alive and not frozen)."""
        return now - self.heartbeat < STALE_AFTER_S


def read_presence(client: redis.Redis, service: str) -> dict[str, Presence]:
    """Every worker's published state; a field that does not decode is skipped (and logged), not fatal."""
    raw: Any = client.hgetall(keys.worker_presence(service))
    found: dict[str, Presence] = {}
    for name_bytes, value in raw.items():
        name = name_bytes.decode()
        try:
            found[name] = Presence.decode(name, value)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable presence of worker %s: %s", name, exc)
    return found


def forget_presence(client: redis.Redis, service: str, name: str) -> None:
    """Drop a worker's field once it is gone: the worker cannot do it after a crash."""
    client.hdel(keys.worker_presence(service), name)


class PresenceReporter:
    """Keeps one worker's field true; every method is safe to call from any thread."""

    def __init__(
        self, client: redis.Redis, service: str, *, clock: Callable[[], float] = time.time,
        gpus: str | None = None, heartbeat_s: float = HEARTBEAT_S,
    ) -> None:  # fmt: skip
        self._client = client
        self._key = keys.worker_presence(service)
        self._clock = clock
        self._heartbeat_s = heartbeat_s
        visible = os.environ.get(CUDA_VISIBLE_DEVICES, "") if gpus is None else gpus
        self._presence = Presence("", os.getpid(), socket.gethostname(), WorkerState.STARTING, visible)
        self._lock = threading.Lock()
        self._stop_requested = False  # set from a signal handler: no lock, no I/O there
        self._wake = threading.Event()
        self._failing = False

    @property
    def presence(self) -> Presence:
        return self._presence

    def starting(self, name: str) -> None:
        """The worker knows its node name: publish it and keep it fresh until the worker is gone."""
        self._update(lambda presence: replace(presence, name=name))
        threading.Thread(target=self._beat, name="presence-heartbeat", daemon=True).start()

    def ready(self) -> None:
        self._update(lambda presence: replace(presence, state=WorkerState.IDLE))

    def received(self, task_id: str, delivery_tag: str) -> None:
        self._update(lambda presence: replace(presence, held={**presence.held, task_id: delivery_tag}))

    def finished(self, task_id: str) -> None:
        self._update(lambda presence: replace(presence, held={k: v for k, v in presence.held.items() if k != task_id}))

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
        """Apply a change and publish, under the lock: tasks are received and finished on different threads."""
        with self._lock:
            presence = change(self._presence)
            self._presence = replace(presence, state=_state_of(presence, self._stop_requested))
            self._publish()

    def _publish(self) -> None:
        presence = self._presence = replace(self._presence, heartbeat=self._clock())
        if presence.name:
            self._write(lambda: self._client.hset(self._key, presence.name, presence.encode()))

    def _write(self, operation: Callable[[], object]) -> None:
        """Presence must never take a worker down: a Redis error is logged once per outage and skipped."""
        try:
            operation()
        except redis.RedisError as exc:
            if not self._failing:
                logger.warning("cannot publish worker presence (will retry): %s", exc)
            self._failing = True
        else:
            self._failing = False

    def _beat(self) -> None:
        while self._presence.name:
            self._wake.wait(self._heartbeat_s)
            self._wake.clear()
            self._update()


def _state_of(presence: Presence, stop_requested: bool) -> WorkerState:
    """Stopping wins; a worker that has not reported ready is starting; else busy while it holds a task."""
    if stop_requested:
        return WorkerState.STOPPING
    if presence.state is WorkerState.STARTING:
        return WorkerState.STARTING
    return WorkerState.BUSY if presence.held else WorkerState.IDLE


def install_presence(app: Any, service: str, broker_url: str) -> PresenceReporter:
    """Publish this worker's presence from Celery's signals (the worker process has one app, so globals are fine)."""
    reporter = PresenceReporter(redis.Redis.from_url(broker_url), service)

    def on_init(sender: object = None, **_: Any) -> None:
        reporter.starting(str(sender))

    signals.celeryd_init.connect(on_init, weak=False)
    signals.worker_ready.connect(lambda **_: reporter.ready(), weak=False)
    track_held_tasks(lambda req, _type: reporter.received(req.id, str(req.message.delivery_tag)), reporter.finished)
    signals.worker_shutting_down.connect(lambda **_: reporter.stop_requested(), weak=False)
    signals.worker_shutdown.connect(lambda **_: reporter.gone(), weak=False)
    app.scalablejob_presence = reporter
    return reporter
