"""Celery's task events (what Flower shows) published in batches, off the path of every task.

A worker with task events on sends three per task (received, started, succeeded). Celery buffers them and asks
its event loop to flush at once, so each event costs a PUBLISH (a round trip and kombu's producer) on the consumer
thread, the one that fetches the next task: a third of a no-op task's cost here. This step lets events gather for
up to EVENT_BATCH_S and sends them as one `task.multi` message, which Celery's event receivers (Flower, `celery
events`) read as the events in order. A full buffer (EVENT_BUFFER_LIMIT) is sent at once.

The worker's event loop is gone at a warm shutdown, and Celery closes the dispatcher without a flush, so a batch due
then would be lost: Flower would show a finished task STARTED forever. So the step sends what is buffered when the
consumer stops (before Celery's worker-offline event: this step starts after Heart, so it stops before it), and again
at the very end, for the tasks that ended while the warm shutdown waited for them; those came after worker-offline,
which Flower reads as the worker being back, so worker-offline is sent once more after them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from celery import bootsteps

from scalablejob.upstream.celery_worker_internals import event_flush, hold_task_events, offline_fields

EVENT_BATCH_S = 0.1  # the most an event waits: Flower shows a task at most this much later
EVENT_BUFFER_LIMIT = 1000  # events held before a batch is sent whatever its age


class EventBatches:
    """Schedules one flush per batch on the worker's event loop; `buffered` is safe to call from any thread."""

    def __init__(self, hub: Any, flush: Callable[[], None], batch_s: float = EVENT_BATCH_S) -> None:
        self._hub = hub
        self._flush = flush
        self._batch_s = batch_s
        self._lock = threading.Lock()
        self._pending = False  # an event was buffered since the last flush began

    def flush_now(self) -> bool:
        """Send what is buffered now, off the event loop (it has stopped); returns whether any event was buffered."""
        with self._lock:
            pending, self._pending = self._pending, False
        if pending:
            self._flush()
        return pending

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
    """Consumer bootstep: batches the task events of each event dispatcher the consumer makes (one per connection),
    and sends the last batch when the consumer stops."""

    requires = ("celery.worker.consumer.heart:Heart",)  # the dispatcher is made; stopped before worker-offline is sent

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._batches: EventBatches | None = None
        self._heartbeat_s: float | None = None

    def start(self, parent: Any) -> None:
        dispatcher = parent.event_dispatcher
        self._batches = None
        if dispatcher is None or parent.hub is None:  # no event loop: Celery sends each event as it comes
            return
        heart = getattr(parent, "heart", None)
        self._heartbeat_s = heart.interval if heart is not None else None
        self._batches = EventBatches(parent.hub, event_flush(parent))
        hold_task_events(parent, EVENT_BUFFER_LIMIT, self._batches.buffered)

    def stop(self, parent: Any) -> None:
        """The consumer stops (a warm shutdown, or a lost connection): the tasks that ended go out before Celery's
        worker-offline."""
        if self._batches is not None:
            self._batches.flush_now()

    def shutdown(self, parent: Any) -> None:
        """Last, before Celery closes the dispatcher: the tasks that ended during the warm shutdown, then
        worker-offline again, so that Flower, which read their events as the worker being back, shows it gone."""
        if self._batches is None or not self._batches.flush_now():
            return
        dispatcher = parent.event_dispatcher
        if dispatcher is not None and self._heartbeat_s is not None:
            dispatcher.send("worker-offline", retry=False, **offline_fields(self._heartbeat_s))
