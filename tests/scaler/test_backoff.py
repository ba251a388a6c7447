"""Crash-loop backoff: doubling delays, capped, reset by a worker that became ready."""

from __future__ import annotations

import pytest

from scalablejob.scaler.backoff import MAX_DELAY_S, Backoff, backoff_delay


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, MAX_DELAY_S), (50, MAX_DELAY_S)],
)
def test_backoff_delay(failures: int, delay: float) -> None:
    assert backoff_delay(failures) == delay


def test_failures_push_the_next_spawn_back_and_readiness_resets() -> None:
    backoff = Backoff().failed(100.0).failed(100.5)
    assert (backoff.failures, backoff.not_before) == (2, 102.5)
    assert not backoff.allows(102.4) and backoff.allows(102.5)
    assert backoff.succeeded() == Backoff()
