"""Small process helpers shared by everything that starts children (jobs, model servers, the stack) or must tell
whether a recorded process still runs (a scaler's lease and workers)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

import psutil

WORKER_NAME_ENV = "SCALABLEJOB_WORKER_NAME"  # set by the scaler that started a worker: its node name, `...@<host>`
CREATE_TIME_TOLERANCE_S = 0.05  # psutil reads the start time in clock ticks: compare with some slack
KILL_ROUNDS = 10  # looks for processes to kill by their environment: a round after each kill, for what they forked
PR_SET_DUMPABLE = 4  # prctl(2)


def forbid_inspection() -> bool:
    """Make this process non-dumpable, before it runs user code: processes of its own user (the jobs it starts) may
    then no longer read its /proc/PID/environ (the broker's password), memory or files, nor ptrace it. A job's exec
    makes the job itself dumpable again, so jobs stay visible to the worker (their token is found in their
    environment). Root is not stopped by it (`scalable_job.run_as` is what keeps root's jobs out); nor is user code
    that runs inside the process, such as query handlers. Returns whether it took effect (Linux only)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def is_same_process(pid: int, create_time: float) -> bool:
    """Whether `pid` still is the process that started at `create_time` (and is not a zombie): with the start time,
    a reused pid is never mistaken for the process it once named."""
    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - create_time) < CREATE_TIME_TOLERANCE_S
        return same and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def holder_identity(pid: int, create_time: float, **extra: str) -> str:
    """How a lease names the process that holds it, as `holder_alive` reads it: its pid and its start time."""
    return json.dumps({"pid": pid, "create_time": create_time, **extra})


def holder_alive(raw: bytes | str | None) -> bool:
    """Whether a lease's value (JSON {"pid", "create_time"}, as a scaler writes its lease) names a process of this
    host that still runs."""
    if raw is None:
        return False
    try:
        holder = json.loads(raw)
        return is_same_process(int(holder["pid"]), float(holder["create_time"]))
    except (ValueError, KeyError, TypeError):
        return False


# Ask for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG; the request survives exec), make sure the parent did
# not die before that (exit 129), then become the program (exit 127 if it cannot, as a shell does). Standard library
# only, run isolated (-I -S): neither the current folder nor the child's PYTHONPATH can change what it imports.
_TRAMPOLINE = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(129)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    print(f"cannot run {sys.argv[2]}: {exc.strerror}", file=sys.stderr)
    sys.exit(127)
"""


def dying_with_parent(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """`argv`, run so that it gets SIGTERM when this process (the thread that starts it) dies: a killed supervisor
    leaves no orphan. A trampoline asks for the signal and then execs `argv`, which is safe while threads run, unlike
    asking for it in a `preexec_fn` between fork and exec. A program not found on the PATH of `env` (default: ours)
    is a FileNotFoundError here, as Popen would raise it."""
    path = (os.environ if env is None else env).get("PATH", os.defpath)
    if shutil.which(argv[0], path=path) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    return [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(os.getpid()), *argv]


def kill_processes_with_env(name: str, value: str, *, rounds: int = KILL_ROUNDS) -> int:
    """SIGKILL every process of this host whose environment (as it was at its exec) has `name=value`, and look again
    for what they forked meanwhile, up to `rounds` times; returns how many were killed. Whatever a process starts
    inherits its environment, whatever session it moves to, unless a program drops it or runs as another user.
    It reads /proc itself: psutil takes ten times longer, and this runs at the end of every job."""
    marker = f"\0{name}={value}\0".encode()
    killed: set[int] = set()
    for _ in range(rounds):
        found = [pid for pid in _pids() if pid != os.getpid() and _has_env(pid, marker)]
        if not found:
            break
        killed.update(pid for pid in found if _kill_marked(pid, marker))
    return len(killed)


def _pids() -> list[int]:
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def _has_env(pid: int, marker: bytes) -> bool:
    """Whether `marker` (NUL, NAME=value, NUL) is in the process's environment; a zombie's has none."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return marker in b"\0" + environ.read()
    except OSError:  # gone, or another user's
        return False


def _kill_marked(pid: int, marker: bytes) -> bool:
    """SIGKILL `pid` if it still has `marker`, through a pidfd where there is one: the pid cannot name another
    process between the check and the signal."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfd here (Linux before 5.3): a pid reused within microseconds is a risk we take
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            return True
        return False
    try:
        if not _has_env(pid, marker):
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        os.close(pidfd)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_held(signums: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Hold back these signals' Python handlers for a spawn: one that raises (KeyboardInterrupt, a stop) inside
    Popen loses the child's pid, and the child runs on unknown to us. A signal that came meanwhile is raised again
    at the block's end, where the caller's cleanup knows the child. Main thread only (the others run no handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = {signum: signal.signal(signum, lambda number, _frame: came.append(number)) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(came):
            signal.raise_signal(signum)


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
