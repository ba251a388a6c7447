"""How often a supervisor may replace a crashed child before it gives up: a child that crashes now and then is
restarted, one that crashes again and again (a broker that refuses every start, a bug at start) ends the whole, so
that its supervisor (systemd, `up`, a human) sees it and says why, instead of a restart loop. Pure: the caller gives
the times."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

RESTARTS = 5
WINDOW_S = 60.0


@dataclass
class RestartBudget:
    """At most `restarts` restarts within any `window_s` seconds."""

    restarts: int = RESTARTS
    window_s: float = WINDOW_S
    _recent: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        """Whether a child that ended at `now` may be replaced; counts the restart if so."""
        while self._recent and now - self._recent[0] >= self.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.restarts:
            return False
        self._recent.append(now)
        return True
