"""`scalablejob frontend --workers N`: N processes serving one listening socket, under one supervisor.

The supervisor (the process the command started) binds the socket, binds the front ends (a token made now is printed
once), prints the start-up lines once, then forks N children that each run the server on the inherited socket: the
kernel hands each new connection to one of them. Forking after the bind means the children share the front ends'
token checks and the dashboard's session key without a second bind or a second token. Every piece of state that
must hold across processes (the watcher registry, the per-token cap of watchers) lives in Redis
(watcher_registry.py); connection caps (security.http.max_connections, per client) are each process's own.

Stopping: SIGTERM, SIGINT or SIGHUP to the supervisor is forwarded to every child as SIGTERM (each closes its
watchers and finishes its requests, as one process does); children still there after the grace period are killed;
the supervisor exits 0. Ctrl-C in a terminal reaches the children directly too, which is harmless. If the supervisor
itself is killed (kill -9), the children get SIGTERM from the kernel (PR_SET_PDEATHSIG) and stop: none is left.

A crashed child (any exit the supervisor did not ask for) is replaced by a fresh fork, said in one line on stderr;
when children crash more than restart_budget.RESTARTS times within WINDOW_S seconds, the supervisor stops them all
and exits 1, saying so: a restart loop hides a fault that someone has to fix.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from scalablejob.model.restart_budget import RestartBudget

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_WATCHED = {*STOP_SIGNALS, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 10.0  # a child's graceful stop (server.GRACEFUL_SHUTDOWN_S for its watchers, then its requests)
_POLL_S = 1.0
# uvicorn's own lines about each process's start and end: said once by the supervisor instead of once per child
_LIFECYCLE = ("Started server process", "Waiting for application startup.", "Application startup complete.",
              "Shutting down", "Waiting for application shutdown.", "Application shutdown complete.",
              "Finished server process")  # fmt: skip


def _say(line: str) -> None:
    print(f"scalablejob front end: {line}", file=sys.stderr, flush=True)


class _QuietLifecycle(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LIFECYCLE)


class Supervisor:
    """Forks `workers` children that each call `serve` (which returns when the child's server has stopped) and keeps
    them running until told to stop."""

    def __init__(self, workers: int, serve: Callable[[], None], *, budget: RestartBudget | None = None) -> None:
        self.workers = workers
        self.serve = serve
        self.budget = budget or RestartBudget()
        self.children: dict[int, int] = {}  # pid -> slot
        self._stopping = False

    def run(self) -> int:
        """Start the children and supervise them; the exit code of the command."""
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        try:
            for slot in range(self.workers):
                self._fork(slot, old_mask)
            _say(f"{self.workers} processes serving, pids {' '.join(map(str, self.children))}")
            code = self._supervise(old_mask)
            self._stop_all()
            return code
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _fork(self, slot: int, old_mask: set[int | signal.Signals]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            self.children[pid] = slot
            return
        code = 1
        try:
            code = self._child(old_mask)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # a child never runs the supervisor's code after its own
            logging.getLogger(__name__).exception("front-end process %d failed", os.getpid())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _child(self, old_mask: set[int | signal.Signals]) -> int:
        parent = os.getppid()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before the request above
            return 1
        for sig in _WATCHED:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal: the supervisor stops us, gracefully
        signal.signal(signal.SIGTERM, _exit_cleanly)  # uvicorn raises the signal again once it has stopped
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        logging.getLogger("uvicorn.error").addFilter(_QuietLifecycle())
        with contextlib.suppress(KeyboardInterrupt):
            self.serve()
        return 0

    def _supervise(self, old_mask: set[int | signal.Signals]) -> int:
        while True:
            received = signal.sigtimedwait(_WATCHED, _POLL_S)
            if received is not None and received.si_signo in STOP_SIGNALS:
                self._stopping = True
                return 0
            for pid, status in self._reap():
                slot = self.children.pop(pid)
                what = _ended(status)
                if not self.budget.allow(time.monotonic()):
                    _say(f"process {pid} {what}, and processes keep ending (more than {self.budget.restarts} "
                         f"times in {self.budget.window_s:g} s): stopping all; see the lines above")  # fmt: skip
                    return 1
                self._fork(slot, old_mask)
                new = next(p for p, s in self.children.items() if s == slot)
                _say(f"process {pid} {what}: replaced by process {new}")

    def _reap(self) -> list[tuple[int, int]]:
        """The children that ended, with their wait status (each pid asked for: the supervisor may have other
        children, such as an embedded redis-server, that are not ours to reap)."""
        ended = []
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                ended.append((pid, status))
        return ended

    def _stop_all(self) -> None:
        """SIGTERM to every child, wait for them, SIGKILL whoever is left after the grace period."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while self.children and time.monotonic() < deadline:
            for pid, _ in self._reap():
                self.children.pop(pid)
            if self.children:
                signal.sigtimedwait({signal.SIGCHLD}, 0.1)
        for pid in list(self.children):
            _say(f"process {pid} did not stop within {STOP_GRACE_S:g} s: killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.children.pop(pid)


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited {os.WEXITSTATUS(status)}"


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)
