"""Celery's task events (what Flower shows) published in batches, off the path of every task.

A worker with task events on sends three per task (received, started, succeeded). Celery buffers them and asks
its event loop to flush at once, so each event costs a PUBLISH (a round trip and kombu's producer) on the consumer
thread, the one that fetches the next task: a third of a no-op task's cost here. This step lets events gather for
up to EVENT_BATCH_S and sends them as one `task.multi` message, which Celery's event receivers (Flower, `celery
events`) read as the events in order. A full buffer (EVENT_BUFFER_LIMIT) is sent at once; shutdown sends the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from celery import bootsteps

EVENT_BATCH_S = 0.1  # the most an event waits: Flower shows a task at most this much later
EVENT_BUFFER_LIMIT = 1000  # events held before a batch is sent whatever its age


class EventBatches:
    """Schedules one flush per batch on the worker's event loop; `buffered` is safe to call from any thread."""

    def __init__(self, hub: Any, flush: Callable[[], None], batch_s: float = EVENT_BATCH_S) -> None:
        self._hub = hub
        self._flush = flush
        self._batch_s = batch_s
        self._lock = threading.Lock()
        self._pending = False

    def buffered(self) -> None:
        """An event was buffered: make sure a flush is due within the batch time."""
        with self._lock:
            if self._pending:
                return
            self._pending = True
        self._hub.call_soon(self._schedule)  # the hub's timer belongs to its own thread

    def _schedule(self) -> None:
        self._hub.call_later(self._batch_s, self._due)

    def _due(self) -> None:
        with self._lock:
            self._pending = False  # before the flush: an event buffered during it schedules the next one
        self._flush()


class EventBatchStep(bootsteps.StartStopStep):
    """Consumer bootstep: batches the task events of each event dispatcher the consumer makes (one per connection)."""

    requires = ("celery.worker.consumer.events:Events",)

    def start(self, parent: Any) -> None:
        dispatcher = parent.event_dispatcher
        if dispatcher is None or parent.hub is None:  # no event loop: Celery sends each event as it comes
            return
        dispatcher.buffer_limit = EVENT_BUFFER_LIMIT
        dispatcher.on_send_buffered = EventBatches(parent.hub, parent._flush_events).buffered
