"""The keeper of an `up`'s stack: a small process that outlives `up`, to stop the stack in order if `up` dies without
doing so (kill -9, the OOM killer). The kernel's SIGTERM (see processes.dying_with_parent) reaches every part at
once; Redis must not get it with them, or a part that still needs Redis to stop (Flower, the scaler waiting on its
workers) hangs reconnecting to it forever. So the keeper waits for the parts, hurries and then kills them after
bounded waits, and stops Redis last.

`up` starts it first and tells it on its stdin each child it starts (`part NAME PID`, `redis PID`); `done` says
that `up` stopped them itself. An end of input without `done` means that `up` is gone. The keeper also holds `up`'s
lock on the data folder, so the folder counts as taken until the old stack has fully stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from scalablejob.local.embedded_broker import REDIS_FOLDER, UNSAVED_WAIT_S
from scalablejob.local.redis_server import unsaved_writes
from scalablejob.local.stack_record import STACK_RECORD
from scalablejob.store.broker import BROKER_RECORD, embedded_url

WARM_STOP_S = 30.0  # the parts got SIGTERM from the kernel: a warm stop, workers finish their tasks
TASKLESS_STOP_S = 5.0  # the parts that hold no task (front end, Flower): a short grace, then SIGKILL
HURRIED_STOP_S = 30.0  # after the scaler's second SIGTERM, which puts running tasks back on the queue
KILLED_STOP_S = 10.0
REDIS_STOP_S = 15.0
KEEPER_EXIT_S = 5.0


@dataclass(frozen=True)
class Order:
    """One line from `up`: a child to watch (`kind` part or redis), or `done`."""

    kind: str
    name: str = ""
    pid: int = 0


def parse_order(line: str) -> Order | None:
    """`part NAME PID`, `redis PID` or `done`; None for anything else (a keeper never fails on its input)."""
    words = line.split()
    try:
        if words[:1] == ["part"] and len(words) == 3:
            return Order("part", words[1], int(words[2]))
        if words[:1] == ["redis"] and len(words) == 2:
            return Order("redis", "redis-server", int(words[1]))
    except ValueError:
        return None
    return Order("done") if words == ["done"] else None


@dataclass
class Watched:
    """What the keeper will stop if `up` dies: the parts (in the order started) and Redis."""

    parts: list[tuple[str, psutil.Process]] = field(default_factory=list)
    redis: psutil.Process | None = None
    done: bool = False

    def take(self, order: Order) -> None:
        if order.kind == "done":
            self.done = True
            return
        try:
            process = psutil.Process(order.pid)  # now, while `up` lives: its pid cannot have been reused yet
        except psutil.NoSuchProcess:
            return
        if order.kind == "redis":
            self.redis = process
        else:
            self.parts.append((order.name, process))


def read_orders(lines: Iterable[str]) -> Watched:
    watched = Watched()
    for line in lines:
        if (order := parse_order(line)) is not None:
            watched.take(order)
    return watched


def _running(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def _wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """The processes still running after waiting up to `timeout_s` for them to end."""
    deadline = time.monotonic() + timeout_s
    while (alive := _running(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _signal(process: psutil.Process, signum: int, *, group: bool = False) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, signum)  # each part leads its own process group
        else:
            process.send_signal(signum)


def stop_in_order(watched: Watched, redis_may_stop: Callable[[], bool] = lambda: True) -> bool:
    """The parts first (they already got SIGTERM from the kernel): those without tasks after a short grace, the
    scaler (whose workers finish their tasks) warm, hurried, then killed; Redis last, unless
    `redis_may_stop` says no (it holds writes it could not put in its file): False if it was left running."""
    taskless = [process for name, process in watched.parts if name != "scaler"]
    for process in _wait_gone(taskless, TASKLESS_STOP_S):  # one busy starting up may not act on SIGTERM yet
        _signal(process, signal.SIGKILL, group=True)
    parts = [process for _, process in watched.parts]
    if alive := _wait_gone(parts, WARM_STOP_S):
        for name, process in watched.parts:
            if name == "scaler" and process in alive:
                _signal(process, signal.SIGTERM)  # its second signal: running tasks go back on the queue
        alive = _wait_gone(alive, HURRIED_STOP_S)
    for process in alive:
        _signal(process, signal.SIGKILL, group=True)
    _wait_gone(alive, KILLED_STOP_S)
    if watched.redis is not None and _running([watched.redis]):
        if not redis_may_stop():
            return False
        _signal(watched.redis, signal.SIGTERM)  # Redis flushes its append-only file, then exits
        if _wait_gone([watched.redis], REDIS_STOP_S):
            _signal(watched.redis, signal.SIGKILL)
    return True


def nothing_unsaved(folder: Path) -> bool:
    """Whether the embedded Redis of `folder` may be stopped: it holds no acknowledged write that is not on disk."""
    url = embedded_url(folder)
    return url is None or unsaved_writes(url, folder / REDIS_FOLDER, UNSAVED_WAIT_S) is None


def forget_records(folder: Path, lock_fd: int, redis_pid: int | None) -> None:
    """Remove what the dead `up` left in its folder: its own record (only the file this keeper holds locked) and the
    embedded broker's record (only if it names the Redis just stopped)."""
    with contextlib.suppress(OSError):
        if os.stat(folder / STACK_RECORD).st_ino == os.fstat(lock_fd).st_ino:
            (folder / STACK_RECORD).unlink()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if redis_pid and json.loads((folder / BROKER_RECORD).read_text()).get("pid") == redis_pid:
            (folder / BROKER_RECORD).unlink()


def main(argv: list[str]) -> int:
    """`python -m scalablejob.local.stack_keeper FOLDER LOCK_FD`, orders on stdin."""
    folder, lock_fd = Path(argv[0]), int(argv[1])
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # a terminal's signals are `up`'s to act on; the keeper acts on EOF
    watched = read_orders(sys.stdin)
    if not watched.done:
        stopped = stop_in_order(watched, lambda: nothing_unsaved(folder))
        forget_records(folder, lock_fd, watched.redis.pid if watched.redis and stopped else None)
    return 0


class Keeper:
    """`up`'s end of the keeper: starts it, tells it each child, and lets it go when `up` stopped them itself."""

    def __init__(self, folder: Path, lock_fd: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "scalablejob.local.stack_keeper", str(folder), str(lock_fd)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, pass_fds=(lock_fd,),
        )  # fmt: skip

    def watch(self, name: str, pid: int) -> None:
        self._tell(f"redis {pid}" if name == "redis" else f"part {name} {pid}")

    def release(self) -> None:
        """`up` stopped everything itself: the keeper has nothing to do and exits (and lets go of the lock)."""
        self._tell("done")
        with contextlib.suppress(OSError):
            self._stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(KEEPER_EXIT_S)

    @property
    def _stdin(self) -> IO[bytes]:
        assert self._process.stdin is not None
        return self._process.stdin

    def _tell(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a keeper that is gone cannot be helped
            self._stdin.write(f"{line}\n".encode())
            self._stdin.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
