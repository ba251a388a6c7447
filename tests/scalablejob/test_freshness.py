"""Liveness as the observer sees it change, on its own clock: pure, time passed in."""

from __future__ import annotations

import math

import pytest

from scalablejob.model.freshness import ChangeTracker, Seen, held_since, observed, silent_for
from scalablejob.store.host_records import SharePlan, plan_is_current


@pytest.mark.parametrize(
    ("before", "tokens", "now", "expected"),
    [
        ({}, {"w": 1}, 5.0, {"w": Seen(1, 5.0)}),  # first seen: changed now (a new observer gives the full bound)
        ({"w": Seen(1, 2.0)}, {"w": 1}, 5.0, {"w": Seen(1, 2.0)}),  # same token: not changed
        ({"w": Seen(1, 2.0)}, {"w": 2}, 5.0, {"w": Seen(2, 5.0)}),  # new token: changed now
        ({"w": Seen(1, 2.0)}, {}, 5.0, {}),  # gone: forgotten
        ({"w": Seen((7, 1e9), 2.0)}, {"w": (8, 1.0)}, 5.0, {"w": Seen((8, 1.0), 5.0)}),  # a wall time stepped back
    ],
)
def test_observed(before: dict[str, Seen], tokens: dict[str, object], now: float, expected: dict[str, Seen]) -> None:
    assert observed(before, tokens, now) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seen", "now", "since", "expected"),
    [
        (None, 100.0, -math.inf, 0.0),
        (Seen(1, 90.0), 100.0, -math.inf, 10.0),
        (Seen(1, 90.0), 100.0, 97.0, 3.0),  # the observer could not read before 97: that silence is not the writer's
        (Seen(1, 90.0), 80.0, -math.inf, 0.0),
    ],
)
def test_silent_for(seen: Seen | None, now: float, since: float, expected: float) -> None:
    assert silent_for(seen, now, since) == expected


def test_a_tracker_judges_only_by_change_whatever_the_writers_clock_says() -> None:
    tracker = ChangeTracker()
    for now, heartbeat in [(0.0, 5000.0), (2.0, 5002.0), (4.0, 4971.0), (6.0, 4973.0)]:  # a 31 s step back at 4
        tracker.observe({"w": (int(now), heartbeat)}, now)
        assert tracker.is_fresh("w", now, 10.0)
    assert tracker.is_fresh("w", 15.9, 10.0) and not tracker.is_fresh("w", 16.0, 10.0)
    assert not tracker.is_fresh("never-seen", 16.0, 10.0)


@pytest.mark.parametrize(("now", "since"), [(5.0, -math.inf), (12.0, -math.inf), (12.0, 9.0), (15.0, 9.0), (4.0, 0.0)])
def test_the_records_fresh_in_one_sweep_are_those_each_is_fresh_says(now: float, since: float) -> None:
    tracker = ChangeTracker()
    tracker.observe({"a": 1, "b": 1, "c": 1}, 0.0)
    tracker.observe({"a": 2, "b": 1, "c": 1}, 3.0)  # a changed at 3
    tracker.observe({"a": 2, "b": 1}, 4.0)  # c gone

    expected = {key for key in ("a", "b", "c", "never") if tracker.is_fresh(key, now, 10.0, since)}
    assert tracker.fresh(now, 10.0, since) == expected


@pytest.mark.parametrize(
    ("since", "holds", "now", "expected"), [(None, False, 1.0, None), (None, True, 1.0, 1.0), (1.0, True, 3.0, 1.0)]
)
def test_held_since(since: float | None, holds: bool, now: float, expected: float | None) -> None:
    assert held_since(since, holds, now) == expected


@pytest.mark.parametrize(
    ("leader", "holder", "current"),
    [("h1:aa", "h1:aa", True), ("h1:aa", "h2:bb", False), ("h1:aa", None, False)],
)
def test_a_plan_is_current_while_its_leader_holds_the_lease(leader: str, holder: str | None, current: bool) -> None:
    plan = SharePlan(4, {"h1": 2}, 1, at=-1e9, leader=leader)  # `at` (a wall time) plays no part
    assert plan_is_current(plan, holder) is current
    assert not plan_is_current(None, holder)
