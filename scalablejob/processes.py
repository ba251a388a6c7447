"""Small process-group helpers shared by everything that starts children: jobs, model servers, the stack."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1
EXIT_PARENT_GONE = 129  # the parent died before the child could ask to follow it


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """`argv`, run so that it gets SIGTERM when this process (the thread that starts it) dies: a killed supervisor
    leaves no orphan. A trampoline asks for the signal and then execs `argv` (the request survives exec), which is
    safe while threads run, unlike asking for it in a `preexec_fn` between fork and exec."""
    return [sys.executable, "-m", "scalablejob.processes", str(os.getpid()), *argv]


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def signal_group(pgid: int, signum: int) -> None:
    """Signal a whole process group; one that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_group(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM a child's process group, SIGKILL it after `grace_s`; returns the child's exit status."""
    if process.poll() is None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
    signal_group(process.pid, signal.SIGKILL)  # stragglers of the group, if any
    return process.wait()


def wait_for_listener(process: subprocess.Popen[bytes], host: str, port: int, timeout_s: float) -> bool:
    """True once `host:port` accepts connections; False as soon as `process` exits, or when time runs out."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
    return False


def _trampoline(parent_pid: int, argv: list[str]) -> None:
    """Ask for SIGTERM on the parent's death, make sure the parent did not die first, then become `argv`."""
    _die_with_parent()
    if os.getppid() != parent_pid:
        sys.exit(EXIT_PARENT_GONE)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    _trampoline(int(sys.argv[1]), sys.argv[2:])
