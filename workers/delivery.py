"""One delivery of a request on this worker: its attempt number, and its writes, in order, through broker outages.

A job must not stop, or start over, because Redis went away for a minute, nor take its worker's memory with it
when it prints faster than Redis takes lines. Its log lines and progress go into a bounded, ordered outbox that a
writer thread drains. While the broker is there, a full outbox holds the job back: the line waits for room, so
the job's output pipe fills and the job blocks on its next write, as it would on a slow terminal. While the broker
is away (or the job is being stopped) the job runs on instead: the oldest lines are kept, later ones counted as
dropped and said where the gap is. The final entry waits for the outbox and then for the broker, however long it
is away: a job that has finished is never run again because its result waited.

Every write carries the delivery's attempt. Once another delivery of the request is current (the scaler requeued
it, or a duplicate message started elsewhere), the writes are refused in the same Lua call (fence.lua): this
delivery is superseded, writes nothing more, and its job is stopped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis

from scalablejob.store.outage import is_outage, pauses, through_outage
from scalablejob.store.sink import EntryType, Sink, entry_tags
from scalablejob.store.state import CANCEL_ASKED, RequestStatus, RequestStore, UnackedMessage

logger = logging.getLogger(__name__)

STALLED_WRITE_S = 2.0  # a write taking longer means the broker is away, though it has not said so
MAX_BUFFERED = 10_000  # writes held; past it a job waits for room, or (broker away) its lines are dropped and counted
WATCH_S = 0.25  # how often a running delivery looks at its cancel flag and whether it is still current
DROPPED_STREAM = "scalablejob"
SUPERSEDED = "superseded"  # the stop reason of a job whose delivery is no longer the current one
CANCELLED_BEFORE_START = -2  # what starting a request that was cancelled while queued answers (state_start.lua)

Write = Callable[[], bool]  # one write to Redis; False when the fence refused it


@dataclass(frozen=True)
class _Line:
    """A log or progress entry of the output queue, waiting in the outbox: lines in a row go in one call."""

    data: bytes
    tags: Mapping[str, str]


@dataclass
class _Gap:
    """Where the outbox dropped writes, and how many: written as one log line in their place. Once the writer has
    taken it, its count is final and a later drop opens another gap."""

    why: str
    dropped: int = 1
    taken: bool = False


Queued = Write | _Line | _Gap
LINES_PER_WRITE = 256  # log entries in a row that the writer appends in one call
BYTES_PER_WRITE = 256 * 1024


@dataclass(frozen=True)
class Started:
    """What starting a delivery found: its attempt, or why it must not run (the request is gone or has ended)."""

    attempt: int

    @property
    def runs(self) -> bool:
        return self.attempt > 0

    @property
    def cancelled(self) -> bool:
        """Cancelled while it was queued: it ends cancelled without running."""
        return self.attempt == CANCELLED_BEFORE_START

    @property
    def why_not(self) -> str:
        return {0: "is gone", -1: "has ended", CANCELLED_BEFORE_START: "was cancelled"}.get(self.attempt, "")


class Delivery:
    """The writes of one delivery (attempt `attempt`) of request `request_id`, to `sink` and its state."""

    def __init__(
        self, requests: RequestStore, sink: Sink, request_id: str, task_type: str, attempt: int, *,
        max_buffered: int = MAX_BUFFERED, watch_s: float = WATCH_S, stalled_write_s: float = STALLED_WRITE_S,
        message: UnackedMessage | None = None, on_acknowledged: Callable[[UnackedMessage], None] | None = None,
    ) -> None:  # fmt: skip
        self.requests = requests
        self.sink = sink
        self.request_id = request_id
        self.task_type = task_type
        self.attempt = attempt
        self._message = message  # acknowledged with the final entry, if given
        self._on_acknowledged = on_acknowledged
        self._fence = requests.fence(request_id, attempt)
        self._max_buffered = max_buffered
        self._watch_s = watch_s
        self._stalled_write_s = stalled_write_s
        self._outbox: deque[Queued] = deque()
        self._lock = threading.Condition()
        self._broker_away = False  # the writer's last try met an outage: a full outbox drops rather than waits
        self._writing_since: float | None = None  # when the write in flight started (a frozen Redis never errs)
        self._closed = False
        self._writer: threading.Thread | None = None
        self._first_log_index: int | None = None
        self._unrecorded_index: int | None = None  # the log's first index, appended but not yet in the state
        self._failed = False  # the writer met a bug and stopped: nothing more is queued or waited for
        self._finishing = False  # the final entry waits for the outbox: later writes (another thread's) are dropped
        self._looked_at = 0.0
        self.superseded = False
        self.cancelled = False

    @classmethod
    def start(
        cls,
        requests: RequestStore,
        sink: Sink,
        request_id: str,
        task_type: str,
        worker: str,
        *,
        message: UnackedMessage | None = None,
        on_acknowledged: Callable[[UnackedMessage], None] | None = None,
    ) -> tuple[Started, Delivery | None]:
        """Start a delivery (waiting for the broker if it is away): its attempt fences every earlier one. `message`,
        the one the request was taken from, is acknowledged by the final entry's write, which then calls
        `on_acknowledged`."""
        started = Started(
            through_outage(lambda: requests.mark_running(request_id, worker, message=message), what="starting a task")
        )
        if not started.runs:
            return started, None
        delivery = cls(
            requests, sink, request_id, task_type, started.attempt, message=message, on_acknowledged=on_acknowledged
        )
        return started, delivery

    # ---- what the job writes, in order, without waiting ------------------------------------------------------

    def log(self, data: bytes, entry_type: EntryType, **tags: str) -> None:
        """A `log` or `progress` entry of the output queue; its first one is remembered as where the log starts."""
        self._queue(_Line(data, entry_tags(self.request_id, self.task_type, entry_type, **tags)))

    def progress(self, fraction: float, message: str) -> None:
        """The request state's progress (the sink's progress entry, if any, comes through `log`)."""
        self._queue(lambda: self.requests.set_progress(self.request_id, fraction, message, self.attempt))

    # ---- what the job's runner asks ---------------------------------------------------------------------------

    def stop_reason(self) -> str | None:
        """Why the job should stop now: "cancelled", "superseded", or None. Never waits for the broker."""
        self._ensure_writer()
        return SUPERSEDED if self.superseded else ("cancelled" if self.cancelled else None)

    def is_cancelled(self) -> bool:
        """For query handlers: cancelled, or superseded (its answer would be refused anyway)."""
        self._look()
        return self.cancelled or self.superseded

    def finish(
        self, status: RequestStatus, data: bytes, tags: Mapping[str, str], *, exit_code: int | None = None,
        error: str | None = None, unless_cancelled: bool = False,
    ) -> bool:  # fmt: skip
        """Write the final entry after everything queued before it; True if it was written, False if this delivery
        was superseded or the request had ended, or (`unless_cancelled`) a cancel was asked meanwhile: then
        `cancelled` is set and nothing was written. While the broker is away it waits, without a deadline: the job has
        run, and giving it back would run it again."""
        self._drain()
        if self.superseded:
            return False

        def final() -> int:
            return self.requests.finish(
                self.sink, self.request_id, status, data, tags, exit_code=exit_code, error=error, attempt=self.attempt,
                unless_cancelled=unless_cancelled, message=self._message,
            )  # fmt: skip

        index = through_outage(final, budget_s=math.inf, what=f"the result of {self.request_id}")
        if index == CANCEL_ASKED:
            self.cancelled = True
            return False
        self.superseded = self.superseded or index <= 0
        if index > 0 and self._message is not None and self._on_acknowledged is not None:
            self._on_acknowledged(self._message)
        return index > 0

    def requeue(self, reason: str) -> bool:
        """Give the request back (its worker cannot run it): fences this delivery. Best effort while away."""
        self.close()
        try:
            return self.requests.requeued(self.request_id, reason, self.attempt)
        except redis.RedisError as exc:
            logger.warning("could not record the requeue of %s: %s", self.request_id, exc)
            return False

    def close(self) -> None:
        """Stop the writer; what is still queued is dropped (use finish to write it)."""
        with self._lock:
            self._closed = True
            self._outbox.clear()
            self._lock.notify_all()

    # ---- the writer ---------------------------------------------------------------------------------------

    def _append(self, lines: list[_Line]) -> bool:
        if self._unrecorded_index is None:  # else: appended already, only its index is left to record
            index = self.sink.append_many([(line.data, line.tags) for line in lines], fence=self._fence)
            if index == 0:
                return False
            if self._first_log_index is not None:
                return True
            self._first_log_index = self._unrecorded_index = index
        recorded = self.requests.set_log_index(self.request_id, self._unrecorded_index, self.attempt)
        self._unrecorded_index = None
        return recorded

    def _queue(self, write: Write | _Line) -> None:
        """Queue a write in order. A full outbox holds the caller until there is room, unless the broker is away or
        the job is being stopped: then the write is dropped and counted where the gap is."""
        self._ensure_writer()
        with self._lock:
            while not self._stopped() and len(self._outbox) >= self._max_buffered:
                if self._broker_away or self._write_stalled():
                    self._count_dropped("the broker was unreachable")
                    return
                if self.cancelled:
                    self._count_dropped("the job was stopping")
                    return
                self._lock.wait(self._watch_s)
            if self._stopped() or self._finishing:
                return
            self._outbox.append(write)
            self._lock.notify_all()

    def _stopped(self) -> bool:
        """Nothing more is written: closed, superseded, or the writer failed."""
        return self._closed or self.superseded or self._failed

    def _write_stalled(self) -> bool:
        """The write in flight has waited on the broker too long to hold the job back for it (a stopped or stalled
        Redis answers nothing and raises nothing)."""
        since = self._writing_since  # the writer clears it without the lock: read it once
        return since is not None and time.monotonic() - since > self._stalled_write_s

    def _count_dropped(self, why: str) -> None:
        last = self._outbox[-1] if self._outbox else None
        if isinstance(last, _Gap) and not last.taken:
            last.dropped += 1
        else:
            self._outbox.append(_Gap(why))  # the one entry past max_buffered: a gap is never followed by another

    def _ensure_writer(self) -> None:
        with self._lock:
            if self._writer is None and not self._closed:
                self._writer = threading.Thread(target=self._run, name=f"delivery-{self.request_id}", daemon=True)
                self._writer.start()

    def _run(self) -> None:
        try:
            self._write_until_closed()
        except Exception:  # a bug, not the broker: the job must not wait for a writer that is gone
            logger.exception("the writer of request %s failed; its remaining log is dropped", self.request_id)
            with self._lock:
                self._failed = True
                self._outbox.clear()
                self._lock.notify_all()

    def _write_until_closed(self) -> None:
        next_pause = pauses()
        while True:
            with self._lock:
                if not self._outbox and not self._closed:
                    self._lock.wait(self._watch_s)
                if self._closed:
                    return
                write, taken = self._next_write()
            self._writing_since = time.monotonic()
            try:
                if write is not None and not write():
                    self._supersede()
                elif write is not None:
                    with self._lock:
                        self._broker_away = False
                        self._pop(taken)
                if time.monotonic() - self._looked_at >= self._watch_s:
                    self._look()
                self._writing_since = None
                next_pause = pauses()
            except redis.RedisError as exc:
                if not is_outage(exc):
                    logger.exception("a write of request %s failed: %d queued write(s) dropped", self.request_id, taken)
                    with self._lock:
                        self._pop(taken)
                    continue
                with self._lock:
                    self._broker_away = True
                    self._writing_since = None
                    self._lock.notify_all()  # a job waiting for room runs on, dropping lines
                    self._lock.wait(next_pause())

    def _next_write(self) -> tuple[Write | None, int]:
        """(the next write, how many queued items it covers): a progress update alone, or the log lines in a row at
        the head of the outbox in one call. Called under the lock."""
        head = self._outbox[0] if self._outbox else None
        if head is None or callable(head):
            return head, 1
        lines: list[_Line] = []
        size = 0
        for item in self._outbox:
            if callable(item) or len(lines) == LINES_PER_WRITE or size > BYTES_PER_WRITE:
                break
            line = self._gap_notice(item) if isinstance(item, _Gap) else item
            lines.append(line)
            size += len(line.data)
        return (lambda: self._append(lines)), len(lines)

    def _pop(self, taken: int) -> None:
        """Take the written (or dropped) items off the outbox's head; called under the lock."""
        for _ in range(min(taken, len(self._outbox))):
            self._outbox.popleft()
        self._lock.notify_all()

    def _gap_notice(self, gap: _Gap) -> _Line:
        """The log line that says, where the gap is, how many writes the outbox could not hold. Its count is final
        from here: a drop after this opens a gap of its own."""
        gap.taken = True
        buffer = f"the worker's buffer of {self._max_buffered} writes was full"
        notice = f"{gap.dropped} log line(s) dropped: {buffer} and {gap.why}"
        tags = entry_tags(self.request_id, self.task_type, EntryType.LOG, stream=DROPPED_STREAM, dropped=gap.dropped)
        return _Line(notice.encode(), tags)

    def _look(self) -> None:
        """Refresh the cancel flag and whether this delivery is still current; a broker outage leaves both."""
        self._looked_at = time.monotonic()
        try:
            current, cancelled = self.requests.delivery_view(self.request_id)
        except redis.RedisError:
            return
        if cancelled != self.cancelled:
            with self._lock:
                self.cancelled = cancelled
                self._lock.notify_all()  # a job waiting for room runs on to see it is stopped
        if current != self.attempt:
            self._supersede()

    def _supersede(self) -> None:
        if not self.superseded:
            logger.warning(
                "request %s: delivery %d is no longer current (another delivery took over): it stops writing",
                self.request_id, self.attempt,
            )  # fmt: skip
        with self._lock:
            self.superseded = True
            self._outbox.clear()
            self._lock.notify_all()

    def _drain(self) -> None:
        """Wait until the outbox is written: the writer retries through an outage, however long."""
        with self._lock:
            if self._writer is None:  # nothing was ever queued
                self._closed = True
                return
            self._finishing = True
            self._lock.wait_for(lambda: not self._outbox or self.superseded or self._failed)
            self._closed = True
            self._lock.notify_all()
