"""The leading scaler's history writer: what a pass already knows, kept as one sample per second for the dashboard.

Each pass of the leader hands over its queue depths, each host's desired / running / busy workers and whether its
decision changed something; a decision that did is kept as an event for the next sample. At most once a second
(on the scaler's monotonic clock) the writer drains the activity the workers and state scripts recorded (tasks started,
finished, failed; their waits and run times) and appends a sample (scalablejob.store.history). The first drain of a
writer only sets its baseline: what happened before it led is not this second's. Followers write nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from scalablejob.model.history import (
    SAMPLE_EVERY_S,
    Counts,
    HostWorkers,
    PendingEvents,
    Sample,
    ScaleEvent,
    summarize,
    task_type_of_queue,
)
from scalablejob.store.history import HistoryStore


class HistoryWriter:
    """Samples the leader's passes into the history, at most every `every_s` seconds."""

    def __init__(self, store: HistoryStore, service: str, every_s: float = SAMPLE_EVERY_S) -> None:
        self._store = store
        self._service = service
        self._every_s = every_s
        self._events = PendingEvents()
        self._last_at: float | None = None  # the monotonic time of the last sample
        self._last_counts: Counts | None = None

    def record(
        self, now: float, queued: Mapping[str, int], hosts: Mapping[str, HostWorkers], event: ScaleEvent | None
    ) -> Sample | None:
        """One pass of the leader; returns the sample written, if this pass wrote one."""
        if event is not None:
            self._events.add(event)
        if self._last_at is not None and now - self._last_at < self._every_s:
            return None
        activity = self._store.drain_activity()
        counts = activity.counts.since(self._last_counts)
        first = self._last_counts is None
        sample = Sample(
            dt=0.0 if self._last_at is None else round(now - self._last_at, 3),
            depth={task_type_of_queue(self._service, queue): depth for queue, depth in queued.items()},
            hosts=dict(hosts), started=counts.started, finished=counts.finished, failed=counts.failed,
            wait=None if first else summarize(activity.waits), run=None if first else summarize(activity.runs),
            events=self._events.take(),
        )  # fmt: skip
        self._store.append(sample)
        self._last_at, self._last_counts = now, activity.counts
        return sample

    def forget(self) -> None:
        """This scaler no longer leads: its next sample, if it leads again, starts from a new baseline."""
        self._last_at = self._last_counts = None
        self._events.take()
