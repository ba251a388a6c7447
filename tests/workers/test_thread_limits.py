"""Celery's time limits for a task in a worker thread (workers/thread_limits.py)."""

from __future__ import annotations

import time

import pytest
from celery.exceptions import TimeLimitExceeded

from scalablejob.workers.thread_limits import thread_time_limits

pytestmark = pytest.mark.timeout(30)


def test_the_hard_limit_holds_against_a_task_that_catches_every_exception() -> None:
    # given a task that goes on through any Exception, as a retry loop does
    def stubborn_loop(seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                time.sleep(0.01)
            except Exception:  # what the test is about
                continue
        return "finished"

    # when it runs past its hard limit, then it ends there, with TimeLimitExceeded(limit), as a process killed at
    # its hard limit does
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded) as raised, thread_time_limits(None, 0.2):
        stubborn_loop(5)
    assert time.monotonic() - started < 2
    assert raised.value.args == (0.2,)
