"""The delivery invariant as a pure decision: what is backed, and when an unbacked request is re-sent."""

from __future__ import annotations

from scalablejob.scaler.reconcile import Backing, Unacked, lost_calls, reconcile, stale_acks

BOUND = 10.0
T0 = 1000.0


def test_a_request_in_a_queue_held_by_a_live_worker_or_just_delivered_is_backed() -> None:
    backing = Backing(queued={"q"}, held={"h"}, unacked={"young": Unacked("t1", T0 - 1), "old": Unacked("t2", T0 - 60)})

    verdict = reconcile(["q", "h", "young", "old", "lost"], backing, {}, T0, BOUND)

    assert verdict.due == []
    assert verdict.unbacked_since == {"old": T0, "lost": T0}  # the clock starts now for the two backed by nothing


def test_a_request_is_re_sent_only_after_it_stayed_unbacked_for_the_bound() -> None:
    nothing = Backing()
    first = reconcile(["lost"], nothing, {}, T0, BOUND)
    early = reconcile(["lost"], nothing, first.unbacked_since, T0 + BOUND - 0.1, BOUND)
    due = reconcile(["lost"], nothing, early.unbacked_since, T0 + BOUND, BOUND)

    assert (first.due, early.due, due.due) == ([], [], ["lost"])


def test_being_seen_backed_once_starts_the_clock_over() -> None:
    unbacked = reconcile(["r"], Backing(), {}, T0, BOUND)
    backed = reconcile(["r"], Backing(queued={"r"}), unbacked.unbacked_since, T0 + 5, BOUND)
    again = reconcile(["r"], Backing(), backed.unbacked_since, T0 + BOUND + 1, BOUND)

    assert backed.unbacked_since == {}
    assert again.due == [] and again.unbacked_since == {"r": T0 + BOUND + 1}


def test_a_request_that_ended_is_forgotten() -> None:
    unbacked = reconcile(["r"], Backing(), {}, T0, BOUND)

    assert reconcile([], Backing(), unbacked.unbacked_since, T0 + BOUND, BOUND).unbacked_since == {}


def test_stale_acks_are_old_messages_of_ended_requests_that_no_live_worker_holds() -> None:
    backing = Backing(
        held={"held"},
        unacked={
            "ended": Unacked("t1", T0 - 60), "held": Unacked("t2", T0 - 60), "open": Unacked("t3", T0 - 60),
            "young": Unacked("t4", T0 - 1),
        },
    )  # fmt: skip

    assert stale_acks(backing, {"open"}, T0, BOUND) == ["ended"]


def test_a_request_whose_worker_is_lost_is_due_at_once_unless_a_live_worker_took_it_again() -> None:
    backing = Backing(
        held={"taken-again"},
        unacked={"lost": Unacked("t1", T0 - 1)},  # delivered just now, but to a worker on a host declared dead
        orphaned={"lost", "taken-again"},
    )

    assert reconcile(["lost", "taken-again"], backing, {}, T0, BOUND).due == ["lost"]


def test_a_celery_call_no_live_worker_holds_goes_back_once_delivered_longer_than_the_bound() -> None:
    calls = {"held": Unacked("t1", 0.0), "lost": Unacked("t2", 0.0), "just-taken": Unacked("t3", 95.0)}

    assert lost_calls(calls, held={"held"}, now=100.0, bound_s=10.0) == ["lost"]
