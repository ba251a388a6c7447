"""Idle first: a worker fetches a task only when it has a free slot of that task's type.

Celery's prefetch settings are not enough on the Redis transport (celery #1933, #4537): a busy worker
still reserves one more message. `SlotGate` counts tasks in flight per type (command: 1 slot,
query: `rpc.worker_threads` slots), and `GateStep` attaches it to the consumer's channel, whose BRPOP then listens
only to the queues whose type has a free slot (transport.kombu_redis). A message is counted the moment it is
received, in the consumer thread, before the next BRPOP is issued, so no second message can slip in. A type can
also be held off for a while: the worker put a message of it back (workers/protocol_check.py), for another worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from celery import bootsteps

from scalablejob.model.routing import TaskType
from scalablejob.transport.kombu_redis import ChannelMixin
from scalablejob.upstream.celery_worker_internals import nothing_reserved
from scalablejob.workers.held import track_held_tasks
from scalablejob.workers.wake import BrpopWaker

logger = logging.getLogger(__name__)


class SlotGate:
    """Thread-safe count of in-flight tasks per type against each type's number of slots."""

    def __init__(
        self, slots: Mapping[TaskType, int], queues: Mapping[str, TaskType],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._slots = dict(slots)
        self._queues = dict(queues)
        self._in_flight: dict[str, TaskType] = {}
        self._held_off: dict[TaskType, float] = {}  # until when (clock) a type's queue is left out
        self._clock = clock
        self._lock = threading.Lock()

    def has_room(self, queue: str) -> bool:
        """True when the queue carries none of our types, or its type has a free slot and is not held off."""
        task_type = self._queues.get(queue)
        if task_type is None:
            return True
        with self._lock:
            until = self._held_off.get(task_type) if self._held_off else None
            if until is not None:
                if self._clock() < until:
                    return False
                del self._held_off[task_type]  # over: the common path reads no clock
            busy = sum(1 for held in self._in_flight.values() if held is task_type)
        return busy < self._slots.get(task_type, 0)

    def hold_off(self, task_type: TaskType, seconds: float) -> None:
        """Leave the type's queue out of the fetches for `seconds`, free slots or not."""
        with self._lock:
            self._held_off[task_type] = self._clock() + seconds

    def claim(self, request_id: str, task_type: TaskType) -> None:
        with self._lock:
            self._in_flight[request_id] = task_type

    def release(self, request_id: str) -> bool:
        """Forget a task that ended; True when its type was full until now (its queue was hidden and reopens)."""
        with self._lock:
            task_type = self._in_flight.pop(request_id, None)
            if task_type is None:
                return False
            busy = sum(1 for held in self._in_flight.values() if held is task_type)
        return busy == self._slots.get(task_type, 0) - 1

    def any_full(self) -> bool:
        """True while some queue of ours is hidden: its slot frees when a task ends, not when a message comes."""
        return any(not self.has_room(queue) for queue in self._queues)

    def in_flight(self, task_type: TaskType) -> int:
        with self._lock:
            return sum(1 for held in self._in_flight.values() if held is task_type)

    def reset(self) -> None:
        """Forget every claim: used when Celery reports no reserved request at all."""
        with self._lock:
            self._in_flight.clear()

    def before_brpop(self) -> bool:
        """Asked by the channel before each BRPOP: True while some queue is left out of it."""
        if nothing_reserved():
            self.reset()  # self-heal: nothing is reserved, so nothing can be in flight
        return self.any_full()


class GateStep(bootsteps.StartStopStep):
    """Consumer bootstep: installs the gate on the task channel each time the consumer (re)connects."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, gate: SlotGate | None = None, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.gate = gate or parent.app.scalablejob_gate

    def start(self, parent: Any) -> None:
        channel = parent.task_consumer.channel
        if not isinstance(channel, ChannelMixin):
            raise RuntimeError(
                f"scalablejob workers need scalablejob's Redis transport for idle-first dispatch, got "
                f"{type(channel).__module__}.{type(channel).__qualname__} (is the broker a redis:// URL?)"
            )
        waker = getattr(parent.app, "scalablejob_waker", None)
        if waker is not None and getattr(parent, "hub", None) is not None:
            waker.attach(parent.hub)  # a short task's slot frees without a gated BRPOP (workers/wake.py)
        channel.gate_dispatch(self.gate, waker)
        channel.keep_unacked(str(parent.app.conf.broker_url), getattr(parent.app, "scalablejob_acks", None))
        self._channel = channel

    def stop(self, parent: Any) -> None:
        """The consumer stops: messages taken whose tasks have not started get their unacknowledged record now, so
        the scaler restores them if this worker does not run them (transport.acks.FinishAcks)."""
        channel = getattr(self, "_channel", None)
        if channel is None:
            return
        try:
            channel.qos.record_unrecorded()
        except redis.RedisError as exc:  # the reconciler re-sends what no message backs
            logger.warning("could not record the messages taken whose tasks have not started: %s", exc)


def install_gate(app: Any, gate: SlotGate, broker_url: str | None = None) -> None:
    """Wire a gate into an app's worker: count received tasks, release finished ones (waking the consumer when that
    reopens a queue), gate the BRPOP."""
    app.scalablejob_gate = gate
    waker = app.scalablejob_waker = BrpopWaker(broker_url) if broker_url else None
    app.steps["consumer"].add(GateStep)

    def released(task_id: str) -> None:
        if gate.release(task_id) and waker is not None:
            waker.wake()

    track_held_tasks(lambda request, task_type: gate.claim(request.id, task_type), released)
