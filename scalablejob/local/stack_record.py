"""Which `scalablejob up` runs in a data folder: its pid and ports, in a file that it keeps locked while it runs.

The lock (flock) goes away with the process, even on kill -9, so a record left behind by a killed `up` is never
taken for a running stack; a second `up` and `scalablejob down` learn from the record who runs there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from scalablejob.host.secret_files import private_folder
from scalablejob.model.errors import ScalableJobError

STACK_RECORD = "up.json"
RECORD_WRITE_WAIT_S = 2.0  # between an `up` taking the lock and writing its record: microseconds in practice


@dataclass(frozen=True)
class StackRecord:
    """An `up`: its pid and the ports it was asked to use (front end, Flower, metrics)."""

    pid: int
    ports: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "ports": self.ports})

    @classmethod
    def from_json(cls, text: str) -> StackRecord | None:
        """The record in `text`, or None when it is not one (empty: its `up` has not written it yet)."""
        try:
            data = json.loads(text)
            pid, ports = int(data["pid"]), {str(name): int(port) for name, port in data.get("ports", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return cls(pid, ports) if pid > 0 else None

    def describe(self) -> str:
        ports = ", ".join(f"{name} {port}" for name, port in self.ports.items())
        return (f"pid {self.pid}" if self.pid else "pid unknown") + (f", ports {ports}" if ports else "")


class StackAlreadyRunning(ScalableJobError):
    """Another `up` holds the data folder: two stacks on one folder would share, and corrupt, one Redis file."""

    def __init__(self, folder: Path, record: StackRecord) -> None:
        super().__init__(
            f"scalablejob up already runs in {folder} ({record.describe()}): use that one, or stop it with "
            f"`scalablejob down --data-dir {folder}`"
        )
        self.record = record


class StackLock:
    """The running `up`'s hold on its data folder: the record file, open and locked until `release`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / STACK_RECORD
        self._fd: int | None = None

    def acquire(self, record: StackRecord) -> None:
        """Take the folder and write `record`; StackAlreadyRunning (naming that one) if another `up` has it."""
        private_folder(self.folder)  # it holds the broker's password and data: its owner's only
        fd = _locked(self.path, fcntl.LOCK_EX)
        if fd is None:
            raise StackAlreadyRunning(self.folder, running_stack(self.folder) or StackRecord(0))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.to_json().encode(), 0)
        except OSError as exc:  # a full disk: nothing starts unrecorded, so nothing starts
            self.path.unlink(missing_ok=True)
            os.close(fd)
            raise ScalableJobError(
                f"scalablejob up could not record itself in {self.path} ({exc.strerror}): free space on the disk of "
                f"{self.folder}, then start again"
            ) from exc
        self._fd = fd

    def fileno(self) -> int:
        """The locked descriptor: a process that inherits it holds the folder too, until it exits."""
        assert self._fd is not None, "acquire() first"
        return self._fd

    def release(self) -> None:
        """Remove the record, then let go of the lock: a clean stop leaves nothing behind."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StackLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def running_stack(folder: Path) -> StackRecord | None:
    """The `up` that runs in `folder`, or None (no record, or one whose `up` is gone: nobody holds its lock)."""
    try:
        fd = os.open(folder / STACK_RECORD, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_when_written(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_when_written(fd: int) -> StackRecord:
    deadline = time.monotonic() + RECORD_WRITE_WAIT_S
    while (record := StackRecord.from_json(os.pread(fd, 65536, 0).decode("utf-8", "replace"))) is None:
        if time.monotonic() > deadline:
            return StackRecord(0)  # locked but unreadable: someone runs there, we cannot say who
        time.sleep(0.02)
    return record


def forget_stale_record(folder: Path) -> bool:
    """Remove the record of an `up` that is gone (killed); True if there was one."""
    path = folder / STACK_RECORD
    if not path.exists() or (fd := _locked(path, fcntl.LOCK_EX)) is None:
        return False
    path.unlink(missing_ok=True)  # under the lock, so no `up` can be taking this very file now
    os.close(fd)
    return True


def _locked(path: Path, operation: int) -> int | None:
    """An open descriptor of `path` holding the lock, or None if someone else holds it. A file that was removed
    while we waited for its lock is no longer the record: take the one that now stands at `path`."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)
