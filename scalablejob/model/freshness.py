"""Liveness as the observer sees it: a record is alive while the observer sees it change. Pure.

No clock is compared across hosts (DESIGN "Delivery guarantees"). A record (a worker's presence, a host's scaler
record) carries a token that its writer changes at every write (a counter); the observer remembers, per record,
the time on its own monotonic clock at which it last saw the token change, as Kubernetes reads its node leases.
A record first seen counts as changed then: a new observer gives everyone the full bound. Time is a parameter.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Seen:
    """What the observer last saw of one record, and when (its own clock) it last saw it change."""

    token: Hashable
    changed_at: float


def observed(before: Mapping[str, Seen], tokens: Mapping[str, Hashable], now: float) -> dict[str, Seen]:
    """The records present now; one whose token is new or differs from the last one seen changed at `now`."""
    seen = {}
    for key, token in tokens.items():
        last = before.get(key)
        seen[key] = last if last is not None and last.token == token else Seen(token, now)
    return seen


def silent_for(seen: Seen | None, now: float, since: float = -math.inf) -> float:
    """How long the record has not changed, counting only from `since` (from when the observer could see again:
    silence while it could not read is not the writer's). A record never seen has not been silent."""
    if seen is None:
        return 0.0
    return max(0.0, now - max(seen.changed_at, since))


class ChangeTracker:
    """Remembers, per record, when it last changed: `observe` each pass, then ask `silent_for` or `is_fresh`."""

    def __init__(self) -> None:
        self._seen: dict[str, Seen] = {}

    def observe(self, tokens: Mapping[str, Hashable], now: float) -> None:
        self._seen = observed(self._seen, tokens, now)

    def silent_for(self, key: str, now: float, since: float = -math.inf) -> float:
        return silent_for(self._seen.get(key), now, since)

    def is_fresh(self, key: str, now: float, bound_s: float, since: float = -math.inf) -> bool:
        """Seen, and seen changing within the bound."""
        return key in self._seen and self.silent_for(key, now, since) < bound_s

    def fresh(self, now: float, bound_s: float, since: float = -math.inf) -> set[str]:
        """Every record seen changing within the bound, in one sweep: `is_fresh` for each, at a fleet's size."""
        return {key for key, seen in self._seen.items() if now - max(seen.changed_at, since) < bound_s}


def held_since(since: float | None, holds: bool, now: float) -> float | None:
    """Since when a condition has held on every reading (None: it does not hold now)."""
    if not holds:
        return None
    return now if since is None else since
