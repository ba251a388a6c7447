"""The scaler's sleep between passes: cut short when a worker ends (SIGCHLD) or work arrives (`poke`); SIGTERM and
SIGINT count stop requests.

Signals only write a byte to a pipe (`signal.set_wakeup_fd`), so the loop wakes at once, and nothing runs
inside a signal handler but a counter increment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEFAULT_INTERVAL_S = 0.25  # a pass costs a handful of Redis round trips: observe often, react fast


class Wakeup:
    """Install with `with Wakeup() as wakeup:`; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.stop_requests = 0
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1

    def __enter__(self) -> Wakeup:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_stop)
        self._previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)  # wake only
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        return self

    def __exit__(self, *_: object) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.close(self._read)
        os.close(self._write)

    def wait(self, timeout_s: float) -> None:
        """Sleep up to `timeout_s`, less if a signal arrives."""
        ready, _, _ = select.select([self._read], [], [], timeout_s)
        if ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._read, 512):
                    pass

    def poke(self) -> None:
        """Wake the loop from another thread (new work arrived)."""
        with contextlib.suppress(BlockingIOError):  # full pipe: a wake-up is pending anyway
            os.write(self._write, b"w")

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_requests += 1
