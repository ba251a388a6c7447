"""Crash-loop backoff: a worker that keeps dying before it is ready is respawned later and later, not in a loop."""

from __future__ import annotations

from dataclasses import dataclass

BASE_DELAY_S = 1.0
MAX_DELAY_S = 60.0


def backoff_delay(failures: int, *, base_s: float = BASE_DELAY_S, max_s: float = MAX_DELAY_S) -> float:
    """Seconds to wait before the next spawn after `failures` start failures in a row: base, 2 base, 4 base, ..."""
    if failures <= 0:
        return 0.0
    return min(max_s, base_s * 2.0 ** (failures - 1))


@dataclass(frozen=True)
class Backoff:
    """Start failures in a row and the earliest time the next worker may be spawned."""

    failures: int = 0
    not_before: float = 0.0

    def allows(self, now: float) -> bool:
        return now >= self.not_before

    def failed(self, now: float) -> Backoff:
        """One more worker died before it was ready."""
        failures = self.failures + 1
        return Backoff(failures, now + backoff_delay(failures))

    def succeeded(self) -> Backoff:
        """A worker became ready: starting works again."""
        return Backoff()
