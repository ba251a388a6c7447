"""Broker outages: which Redis errors mean "not now" rather than "wrong", and riding them out with a deadline.

A restart (connection refused, LOADING), a failover (READONLY, MASTERDOWN), a full server (OOM) or a persistence
error (MISCONF: its disk is full) pass: the same write succeeds once the server is back. Anything else is a bug or
bad data and must surface at once. A refusal met inside a Lua script reaches us wrapped: Redis 6.2 says `Error
running script (call to f_...): @user_script:18: @user_script: 18: -MISCONF Errors writing to the AOF file: No
space left on device`, Redis 7 `MISCONF Errors writing ... script: ...`; both are the same refusal.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

import redis

logger = logging.getLogger(__name__)

T = TypeVar("T")

OUTAGE_BUDGET_S = 300.0  # how long a write waits for the broker before its caller gives the work back
FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 1.0
_REFUSALS = {  # the refusals that pass, by their error code, and what each says of the broker
    "MISCONF": "the broker cannot persist its data",
    "OOM": "the broker is out of memory (maxmemory)",
    "READONLY": "the broker is a read-only replica",
    "MASTERDOWN": "the broker's master is down",
    "NOREPLICAS": "the broker has too few replicas",
    "LOADING": "the broker is loading its data",
    "TRYAGAIN": "the broker asks to try again",
}
# the error code at the start of a reply, or after a script's "@user_script: 18: " with Redis' "-" left in front
_PASSING_CODE = re.compile(rf"(?:^|[\s:])-?({'|'.join(_REFUSALS)})\b")
_DISK_FULL = "No space left on device"


class OutageWarning:
    """For a background write that must never take its process down and is tried again later: a failure is logged
    once per outage, on `log`, and nothing more until a write succeeds again."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what  # what failed, as the warning's start says it
        self._failing = False

    def failed(self, exc: BaseException) -> None:
        if not self._failing:
            self._log.warning("%s (will retry): %s", self._what, exc)
        self._failing = True

    def succeeded(self) -> None:
        self._failing = False


class BrokerUnavailable(redis.ConnectionError):
    """The broker stayed away longer than a caller could wait."""


def is_outage(exc: BaseException) -> bool:
    """True for errors that a later retry of the same command can get past."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError)):
        return True
    return isinstance(exc, redis.ResponseError) and refusal_code(str(exc)) is not None


def refusal_code(text: str) -> str | None:
    """The code of a passing refusal in a Redis error's text (MISCONF, OOM, ...), wrapped by a script or not."""
    match = _PASSING_CODE.search(text)
    return match.group(1) if match else None


def describe_refusal(text: str) -> str | None:
    """One sentence naming why the broker refused (its disk is full, it is out of memory, ...), with Redis' own
    words from the code on; None when `text` is no passing refusal."""
    match = _PASSING_CODE.search(text)
    if match is None:
        return None
    code, redis_words = match.group(1), text[match.start(1) :]
    why = _REFUSALS[code] + (": its disk is full" if code == "MISCONF" and _DISK_FULL in text else "")
    return f"{why} ({redis_words})"


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
