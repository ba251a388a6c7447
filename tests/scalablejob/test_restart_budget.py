"""The supervisor's restart budget: restarts now and then are allowed, a burst over the limit is not."""

from __future__ import annotations

from scalablejob.model.restart_budget import RestartBudget


def test_restarts_within_the_budget_are_allowed_and_one_more_in_the_window_is_not():
    budget = RestartBudget(restarts=2, window_s=10)
    assert [budget.allow(t) for t in (0.0, 1.0, 2.0)] == [True, True, False]


def test_restarts_older_than_the_window_no_longer_count():
    budget = RestartBudget(restarts=2, window_s=10)
    assert [budget.allow(t) for t in (0.0, 1.0, 10.0, 11.0, 12.0)] == [True, True, True, True, False]
