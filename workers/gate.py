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
from scalablejob.workers.unacked import outlive_the_channel

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

    def release(self, request_id: str) -> None:
        with self._lock:
            self._in_flight.pop(request_id, None)

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


def gate_channel(channel: Any, gate: SlotGate) -> None:
    """Make a kombu Redis channel BRPOP only on queues with room (wraps `Channel._brpop_start`)."""
    if getattr(channel, "_scalablejob_gated", False):
        return
    original_start = channel._brpop_start

    def gated_brpop_start(timeout: float | None = None) -> None:
        if len(worker_state.reserved_requests) == 0:
            gate.reset()  # self-heal: nothing is reserved, so nothing can be in flight
        if gate.any_full():
            # a hidden queue reopens when a task ends; a short BRPOP lets the next one include it soon after
            timeout = GATED_BRPOP_TIMEOUT_S
        cycle = channel._queue_cycle
        channel._queue_cycle = _GatedCycle(cycle, gate)
        try:
            original_start(timeout)
        finally:
            channel._queue_cycle = cycle

    channel._brpop_start = gated_brpop_start
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
        gate_channel(channel, self.gate)
        outlive_the_channel(channel, str(parent.app.conf.broker_url))


def install_gate(app: Any, gate: SlotGate) -> None:
    """Wire a gate into an app's worker: count received tasks, release finished ones, gate the BRPOP."""
    app.scalablejob_gate = gate
    app.steps["consumer"].add(GateStep)
    track_held_tasks(lambda request, task_type: gate.claim(request.id, task_type), gate.release)
