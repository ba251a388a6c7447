"""`up` keeps its embedded Redis running: one that exits (kill -9, the OOM killer, a crash) is started again on the
same port, with the same data folder and password, so that every part of the stack reconnects to it as after any
broker outage, and the queued work in its append-only file is there again. A Redis that cannot start is tried again
after a pause that doubles up to a bound, each failure said in one line: a stack whose broker will not come back
waits for it as its parts do, until it is stopped."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from scalablejob.local.embedded_broker import EmbeddedBroker
from scalablejob.model.errors import ScalableJobError

FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0

Say = Callable[[str], None]


def how_it_ended(status: int) -> str:
    """`killed by SIGKILL` or `with status 1`, from a Popen exit status."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"with status {status}"


class BrokerRestarts:
    """Watches the embedded broker of one `up`; `check` (once per pass of up's loop) restarts it if it exited."""

    def __init__(
        self, broker: EmbeddedBroker, say: Say, *, first_pause_s: float = FIRST_PAUSE_S,
        max_pause_s: float = MAX_PAUSE_S, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.broker = broker
        self.say = say
        self.first_pause_s = first_pause_s
        self.max_pause_s = max_pause_s
        self.clock = clock
        self.restarts = 0
        self._pause_s = 0.0
        self._next_try = 0.0

    @property
    def due(self) -> bool:
        """The broker exited, and its next try is due."""
        return self.broker.server.exit_status is not None and self.clock() >= self._next_try

    def check(self) -> None:
        """Restart the broker if that is due; a failed try is said, and tried again later."""
        if not self.due:
            return
        server = self.broker.server
        status = server.exit_status
        assert status is not None
        where = f"port {server.port}"
        self.say(f"redis-server (pid {server.pid}) exited {how_it_ended(status)}: restarting it on {where} with the "
                 "same data and password")  # fmt: skip
        try:
            self.broker.restart()
        except (ScalableJobError, OSError) as exc:
            self._pause_s = min(self.max_pause_s, max(self.first_pause_s, self._pause_s * 2))
            self._next_try = self.clock() + self._pause_s
            self.say(f"redis-server did not restart: {exc}; trying again in {self._pause_s:g} s")
            return
        self._pause_s = 0.0
        self.restarts += 1
        self.say(f"redis-server is back on {where} (pid {server.pid}); the parts reconnect to it")
