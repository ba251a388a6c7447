"""Idle first: a worker fetches a task only when it has a free slot of that task's type.

Celery's prefetch settings are not enough on the Redis transport (celery #1933, #4537): a busy worker
still reserves one more message. `SlotGate` counts tasks in flight per type (command: 1 slot,
query: `rpc.worker_threads` slots), and `GateStep` makes the consumer's BRPOP listen only to the
queues whose type has a free slot. A message is counted the moment it is received, in the consumer
thread, before the next BRPOP is issued, so no second message can slip in.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

from scalablejob.routing import TaskType
from scalablejob.workers.held import track_held_tasks
from scalablejob.workers.unacked import one_client, outlive_the_channel, record_in_one_call
from scalablejob.workers.wake import BrpopWaker, brpop_client_id

GATED_BRPOP_TIMEOUT_S = 0.1


class SlotGate:
    """Thread-safe count of in-flight tasks per type against each type's number of slots."""

    def __init__(self, slots: Mapping[TaskType, int], queues: Mapping[str, TaskType]) -> None:
        self._slots = dict(slots)
        self._queues = dict(queues)
        self._in_flight: dict[str, TaskType] = {}
        self._lock = threading.Lock()

    def has_room(self, queue: str) -> bool:
        """True when the queue carries none of our types, or its type has a free slot."""
        task_type = self._queues.get(queue)
        if task_type is None:
            return True
        with self._lock:
            busy = sum(1 for held in self._in_flight.values() if held is task_type)
        return busy < self._slots.get(task_type, 0)

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


class _GatedCycle:
    """A view of kombu's queue cycle that hides the queues without a free slot."""

    def __init__(self, cycle: Any, gate: SlotGate) -> None:
        self._cycle = cycle
        self._gate = gate

    def consume(self, n: int) -> list[str]:
        return [queue for queue in self._cycle.consume(n) if self._gate.has_room(queue)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cycle, name)


def gate_channel(channel: Any, gate: SlotGate, waker: BrpopWaker | None = None) -> None:
    """Make a kombu Redis channel BRPOP only on queues with room (wraps `Channel._brpop_start`); with a waker, a
    BRPOP that leaves a queue out can be ended as soon as that queue's slot frees (workers/wake.py)."""
    if getattr(channel, "_scalablejob_gated", False):
        return
    original_start, original_read = channel._brpop_start, channel._brpop_read

    def gated_brpop_start(timeout: float | None = None) -> None:
        if len(worker_state.reserved_requests) == 0:
            gate.reset()  # self-heal: nothing is reserved, so nothing can be in flight
        hidden = gate.any_full()
        if hidden:  # a fallback: the waker ends this BRPOP as soon as a hidden queue reopens
            timeout = GATED_BRPOP_TIMEOUT_S
        client_id = brpop_client_id(channel) if hidden and waker is not None else None
        cycle = channel._queue_cycle
        channel._queue_cycle = _GatedCycle(cycle, gate)
        try:
            original_start(timeout)
        finally:
            channel._queue_cycle = cycle
        if client_id is not None and waker is not None and channel._in_poll:
            waker.sent(client_id)

    def woken_brpop_read(**options: Any) -> Any:
        try:
            return original_read(**options)
        finally:
            if waker is not None:
                waker.returned()

    channel._brpop_start, channel._brpop_read = gated_brpop_start, woken_brpop_read
    channel._scalablejob_gated = True


class GateStep(bootsteps.StartStopStep):
    """Consumer bootstep: installs the gate on the task channel each time the consumer (re)connects."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, gate: SlotGate | None = None, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.gate = gate or parent.app.scalablejob_gate

    def start(self, parent: Any) -> None:
        channel = parent.task_consumer.channel
        if parent.connection.transport.driver_type != "redis":
            raise RuntimeError("scalablejob workers need the Redis transport for idle-first dispatch")
        gate_channel(channel, self.gate, getattr(parent.app, "scalablejob_waker", None))
        outlive_the_channel(channel, str(parent.app.conf.broker_url), getattr(parent.app, "scalablejob_acks", None))
        one_client(channel)
        record_in_one_call(channel)


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
