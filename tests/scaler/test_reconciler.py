"""The reconciler's thread: the pass hands over snapshots without waiting, and takes back what was re-sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import pytest
import redis

from scalablejob.scaler.reconciler import BackgroundReconciler, BackgroundRecovery
from scalablejob.scaler.recovery import NO_ORPHANS
from scalablejob.scaler.testing import FakeRecovery

WAIT_S = 5.0


@dataclass
class GatedRecovery:
    """A Recoverer whose reconciles wait for the test to let each one end; each re-sends what it is told to."""

    gate: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    seen: list[tuple[frozenset[str], float, dict[str, str]]] = field(default_factory=list)
    resend: list[str] = field(default_factory=list)
    fail: Exception | None = None

    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]:
        return list(held)

    def reconcile(self, claimed: Collection[str], now: float, orphaned: Mapping[str, str] = NO_ORPHANS) -> list[str]:
        self.seen.append((frozenset(claimed), now, dict(orphaned)))
        assert self.gate.acquire(timeout=WAIT_S)
        if self.fail is not None:
            raise self.fail
        return list(self.resend)


def started(gated: GatedRecovery, count: int) -> None:
    """Wait until the thread has begun its `count`th reconcile."""
    deadline = time.monotonic() + WAIT_S
    while len(gated.seen) < count:
        assert time.monotonic() < deadline, "the reconcile never began"
        time.sleep(0.01)


@pytest.fixture
def gated() -> GatedRecovery:
    return GatedRecovery()


@pytest.fixture
def clock() -> list[float]:
    return [100.0]


@pytest.fixture
def reconciler(gated: GatedRecovery, clock: list[float]):
    runner = BackgroundReconciler(gated, monotonic=lambda: clock[0])
    runner.start()
    yield runner
    gated.gate.release(10)
    runner.stop()


def test_snapshots_handed_over_during_a_reconcile_wait_and_only_the_newest_is_reconciled(reconciler, gated, clock):
    # given a reconcile under way
    reconciler.submit({"a"}, 1000.0)
    started(gated, 1)

    # when two more snapshots come meanwhile (the submits return at once), 3 s apart
    reconciler.submit({"b"}, 1001.0)
    clock[0] += 3
    reconciler.submit({"c"}, 1004.0, {"x": "its host h2 was declared dead"})
    gated.gate.release()
    started(gated, 2)
    gated.resend = ["x"]
    gated.gate.release()

    # then the newest one is reconciled next, and the older waiting one never
    assert reconciler.wait_idle(WAIT_S)
    assert [claimed for claimed, _, _ in gated.seen] == [{"a"}, {"c"}]
    assert gated.seen[1][2] == {"x": "its host h2 was declared dead"}
    assert reconciler.drain() == ["x"] and reconciler.drain() == []


def test_a_snapshot_that_waited_is_judged_at_the_time_its_reconcile_starts(reconciler, gated, clock):
    reconciler.submit(set(), 1000.0)
    started(gated, 1)
    reconciler.submit(set(), 2000.0)  # waits while the first one runs
    clock[0] += 7
    gated.gate.release(2)

    assert reconciler.wait_idle(WAIT_S)
    assert [now for _, now, _ in gated.seen] == [1000.0, 2007.0]


def test_a_failed_reconcile_leaves_the_thread_running_for_the_next_snapshot(reconciler, gated):
    gated.fail = redis.ConnectionError("the broker is away")
    reconciler.submit(set(), 1000.0)
    gated.gate.release()
    assert reconciler.wait_idle(WAIT_S)

    gated.fail, gated.resend = None, ["r"]
    reconciler.submit(set(), 1003.0)
    gated.gate.release()

    assert reconciler.wait_idle(WAIT_S) and reconciler.drain() == ["r"]


def test_background_recovery_recovers_at_once_and_reconciles_on_its_thread():
    now, background = FakeRecovery(), FakeRecovery()
    recovery = BackgroundRecovery(now, background)
    try:
        assert recovery.recover("w@h", {"t": "tag"}, "died") == ["t"]
        assert recovery.reconcile({"held"}, 1000.0, {"o": "its worker w@h2 fell silent"}) == []
        assert recovery.reconciler.wait_idle(WAIT_S)
    finally:
        recovery.stop()

    assert now.recovered == [("w@h", {"t": "tag"})] and now.reconciled == []
    assert background.reconciled == [{"held"}] and background.orphaned == [{"o": "its worker w@h2 fell silent"}]


def test_a_snapshot_with_new_orphans_is_waited_for_and_one_without_is_not(
    gated: GatedRecovery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the loop's recovery over a reconciler whose reconciles end when the test lets them
    monkeypatch.setattr("scalablejob.scaler.reconciler.ORPHANS_WAIT_S", WAIT_S)  # a loaded machine cannot outlast it
    recovery = BackgroundRecovery(FakeRecovery(), gated)
    gated.resend = ["o"]
    try:
        # when a snapshot names an orphan not named before, and its reconcile is let end 0.3 s later
        threading.Timer(0.3, gated.gate.release).start()
        sent = recovery.reconcile(set(), 1000.0, {"o": "its worker w@h2 fell silent"})

        # then the pass waited for it (what it re-sent is taken back only once it has ended)
        assert sent == ["o"]

        # and a later snapshot naming the same orphan is handed over without a wait
        began = time.monotonic()
        recovery.reconcile(set(), 1003.0, {"o": "its worker w@h2 fell silent"})
        assert time.monotonic() - began < WAIT_S / 2 and not recovery.reconciler.wait_idle(0)
        gated.gate.release()
    finally:
        gated.gate.release(10)
        recovery.stop()
