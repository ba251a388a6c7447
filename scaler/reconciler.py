"""The reconciler off the scaler's pass: reconciles run on a thread of their own, fed the loop's latest snapshot.

A reconcile reads every open request, queued message and unacknowledged entry: at 100 000 queued requests that is
about a second of short reads. Inside the pass it would hold the pass as long, and a burst landing meanwhile would
wait that long for its worker. Here the pass only hands over what it saw (which ids live workers hold, which are
orphaned and why) and takes back the ids that earlier reconciles re-sent, for its log. One reconcile runs at a time,
on the newest snapshot (an older one still waiting is replaced), with the Redis client of the Recoverer it is given.
`BackgroundRecovery` wraps this behind the loop's Recoverer interface, `recover` staying on the pass as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import redis

from scalablejob.scaler.recovery import NO_ORPHANS, Recoverer
from scalablejob.transport.errors import BrokerOperationalError as OperationalError

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
ORPHANS_WAIT_S = 1.0  # how long a pass waits for the re-send of newly orphaned tasks (a few ms, unless at depth)
_TRANSIENT = (redis.RedisError, OperationalError)  # the broker is away: the next snapshot tries again


@dataclass(frozen=True)
class Snapshot:
    """What the pass saw: the ids live workers hold, the orphaned ones with why, at the loop's time `now`."""

    claimed: frozenset[str]
    orphaned: Mapping[str, str]
    now: float
    seen_at: float  # this process's monotonic clock at `now`: how long the snapshot waited, added to `now`


class BackgroundReconciler:
    """Runs a Recoverer's reconciles on a daemon thread: start, submit snapshots, drain the ids re-sent, stop."""

    def __init__(self, recoverer: Recoverer, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._recoverer = recoverer
        self._monotonic = monotonic
        self._changed = threading.Condition()
        self._pending: Snapshot | None = None
        self._busy = False
        self._stopping = False
        self._sent: list[str] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)
                self._thread.start()

    def submit(self, claimed: Collection[str], now: float, orphaned: Mapping[str, str] = NO_ORPHANS) -> None:
        """Reconcile against this snapshot next; never waits for a reconcile under way."""
        snapshot = Snapshot(frozenset(claimed), dict(orphaned), now, self._monotonic())
        with self._changed:
            self._pending = snapshot
            self._changed.notify_all()

    def drain(self) -> list[str]:
        """The ids re-sent since the last drain."""
        with self._changed:
            sent, self._sent = self._sent, []
        return sent

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every snapshot submitted so far is reconciled; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending is None and not self._busy, timeout_s)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """End the thread after the reconcile under way, if any."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while (snapshot := self._next()) is not None:
            sent = self._reconcile(snapshot)
            with self._changed:
                self._sent.extend(sent)
                self._busy = False
                self._changed.notify_all()

    def _next(self) -> Snapshot | None:
        """The newest snapshot, once there is one; None when stopping."""
        with self._changed:
            self._changed.wait_for(lambda: self._pending is not None or self._stopping)
            if self._stopping:
                return None
            snapshot, self._pending, self._busy = self._pending, None, True
            return snapshot

    def _reconcile(self, snapshot: Snapshot) -> list[str]:
        # judged at the time the reads start, not when the pass saw its workers: a wait never shortens the bound
        now = snapshot.now + max(0.0, self._monotonic() - snapshot.seen_at)
        began = self._monotonic()
        try:
            sent = self._recoverer.reconcile(snapshot.claimed, now, snapshot.orphaned)
        except _TRANSIENT as exc:
            logger.error("reconcile skipped, the broker is unavailable: %s", exc)
            return []
        except Exception:  # the thread must outlive a bug in one reconcile: the next snapshot tries again
            logger.exception("reconcile failed")
            return []
        logger.debug("reconciled in %.3f s; %d request(s) re-sent", self._monotonic() - began, len(sent))
        return sent


class BackgroundRecovery:
    """The loop's Recoverer with reconciles off the pass: `recover` runs at once on `now`, `reconcile` hands the
    snapshot to a BackgroundReconciler over `background` (a Recovery with its own Redis client) and returns the ids
    that earlier reconciles re-sent."""

    def __init__(self, now: Recoverer, background: Recoverer) -> None:
        self._now = now
        self.reconciler = BackgroundReconciler(background)
        self._orphans_handed: set[str] = set()

    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]:
        return self._now.recover(worker, held, reason)

    def reconcile(self, claimed: Collection[str], now: float, orphaned: Mapping[str, str] = NO_ORPHANS) -> list[str]:
        """Hand the snapshot over; one with new orphans is waited for (up to ORPHANS_WAIT_S): the pass goes on to
        start workers in their lost workers' place, which must find them back at the head of their queues, not take
        other tasks first."""
        self.reconciler.start()
        self.reconciler.submit(claimed, now, orphaned)
        if not set(orphaned) <= self._orphans_handed:
            self.reconciler.wait_idle(ORPHANS_WAIT_S)
        self._orphans_handed = set(orphaned)
        return self.reconciler.drain()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.reconciler.stop(timeout_s)
