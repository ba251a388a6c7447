"""Broker outages: which Redis errors mean "not now" rather than "wrong", and riding them out with a deadline.

A restart (connection refused, LOADING), a failover (READONLY, MASTERDOWN), a full server (OOM) or a persistence
error (MISCONF) pass: the same write succeeds once the server is back. Anything else is a bug or bad data and
must surface at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

logger = logging.getLogger(__name__)

T = TypeVar("T")

OUTAGE_BUDGET_S = 300.0  # how long a write waits for the broker before its caller gives the work back
FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 1.0
_PASSING_REPLIES = ("OOM", "MISCONF", "READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN")


class BrokerUnavailable(redis.ConnectionError):
    """The broker stayed away longer than a caller could wait."""


def is_outage(exc: BaseException) -> bool:
    """True for errors that a later retry of the same command can get past."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError)):
        return True
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        return any(text.startswith(code) or f" {code} " in f" {text} " for code in _PASSING_REPLIES)
    return False


def pauses(first_s: float = FIRST_PAUSE_S, cap_s: float = MAX_PAUSE_S) -> Callable[[], float]:
    """Doubling pauses between tries, capped: the next pause each call."""
    pause = first_s / 2

    def next_pause() -> float:
        nonlocal pause
        pause = min(cap_s, pause * 2)
        return pause

    return next_pause


def through_outage(
    operation: Callable[[], T], *, budget_s: float = OUTAGE_BUDGET_S, what: str = "a broker write",
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> T:  # fmt: skip
    """Run `operation`, retrying it while the broker is away, for up to `budget_s`; BrokerUnavailable after that.
    Errors that are not outages are raised at once."""
    deadline = clock() + budget_s
    next_pause = pauses()
    warned = False
    while True:
        try:
            return operation()
        except redis.RedisError as exc:
            if not is_outage(exc):
                raise
            if clock() >= deadline:
                raise BrokerUnavailable(f"{what}: the broker was unavailable for {budget_s:g} s ({exc})") from exc
            if not warned:
                logger.warning("%s waits for the broker: %s", what, exc)
                warned = True
            sleep(next_pause())
