"""Act: the worker processes themselves. Spawn (pinned to GPUs), warm stop, kill, adopt and reap.

Each worker runs in its own session, so that Ctrl-C on the scaler's terminal reaches only the scaler (which
then drains the workers), and so that workers outlive a scaler that crashed, for the next one to adopt.
Each worker carries its node name in its environment; whatever it started (command tasks run in sessions of
their own) inherits it, which is how the processes a crashed worker left behind are found and killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import psutil

from scalablejob.gpus import CUDA_VISIBLE_DEVICES, Gpu, cuda_visible_devices
from scalablejob.scaler.records import ProcessRecord, is_same_process

logger = logging.getLogger(__name__)

WORKER_NAME_ENV = "SCALABLEJOB_WORKER_NAME"


@dataclass(frozen=True)
class WorkerSpec:
    """A worker to start: its Celery node name and the GPUs it gets (none for CPU workers)."""

    name: str
    gpus: tuple[Gpu, ...] = ()


@dataclass(frozen=True)
class Exited:
    """A worker process that ended; `exit_code` is None when it was not our child (adopted), so unknown."""

    name: str
    exit_code: int | None


class Launcher(Protocol):
    """What the loop needs from a process backend (real processes here; a fake in scalablejob.scaler.testing)."""

    def spawn(self, spec: WorkerSpec) -> ProcessRecord: ...

    def adopt(self, record: ProcessRecord) -> bool: ...

    def stop(self, name: str) -> None: ...

    def kill(self, name: str) -> None: ...

    def reap(self) -> list[Exited]: ...

    def kill_leftovers(self, name: str) -> int: ...


def worker_env(base: Mapping[str, str], spec: WorkerSpec) -> dict[str, str]:
    """The environment of a worker: its GPUs through CUDA_VISIBLE_DEVICES (empty for CPU workers) and its name."""
    return {**base, CUDA_VISIBLE_DEVICES: cuda_visible_devices(spec.gpus), WORKER_NAME_ENV: spec.name}


class ProcessLauncher:
    """Real `scalablejob worker` processes, started from `worker_argv` plus `-n NAME`."""

    def __init__(self, worker_argv: Sequence[str], host: str, *, log_dir: Path | None = None) -> None:
        self._argv = list(worker_argv)
        self._host = host
        self._log_dir = log_dir
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._adopted: dict[str, ProcessRecord] = {}

    @property
    def names(self) -> list[str]:
        """The workers it holds: spawned or adopted, not yet reaped."""
        return [*self._children, *self._adopted]

    def spawn(self, spec: WorkerSpec) -> ProcessRecord:
        output = self._log_file(spec.name)
        try:
            process = subprocess.Popen(
                [*self._argv, "-n", spec.name], env=worker_env(os.environ, spec), stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT if output else None, start_new_session=True,
            )  # fmt: skip
        finally:
            if output is not None:
                output.close()
        self._children[spec.name] = process
        try:
            create_time = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:  # died at once: reap() reports it
            create_time = 0.0
        gpus = tuple(gpu.uuid for gpu in spec.gpus)
        return ProcessRecord(spec.name, process.pid, create_time, self._host, gpus, time.time())

    def adopt(self, record: ProcessRecord) -> bool:
        """Take over a worker of a previous scaler run if that very process still runs as that worker."""
        if not is_same_process(record.pid, record.create_time) or _env_of(record.pid) != record.name:
            return False
        self._adopted[record.name] = record
        return True

    def stop(self, name: str) -> None:
        """Warm shutdown: SIGTERM to the worker only, never to its group, so its running command finishes."""
        self._signal(name, signal.SIGTERM)

    def kill(self, name: str) -> None:
        self._signal(name, signal.SIGKILL)

    def reap(self) -> list[Exited]:
        exited = [Exited(name, code) for name, child in self._children.items() if (code := child.poll()) is not None]
        gone = [name for name, record in self._adopted.items() if not is_same_process(record.pid, record.create_time)]
        exited += [Exited(name, None) for name in gone]
        for item in exited:
            self._children.pop(item.name, None)
            self._adopted.pop(item.name, None)
        return exited

    def kill_leftovers(self, name: str) -> int:
        """SIGKILL every process still carrying a dead worker's name (its command tasks); returns how many."""
        killed = 0
        for process in psutil.process_iter(["environ"]):
            if (process.info.get("environ") or {}).get(WORKER_NAME_ENV) == name:
                with contextlib.suppress(psutil.Error):
                    process.kill()
                    killed += 1
        return killed

    def _signal(self, name: str, signum: int) -> None:
        pid = self._pid(name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):  # already gone: reap() will tell
                os.kill(pid, signum)

    def _pid(self, name: str) -> int | None:
        if name in self._children:
            return self._children[name].pid
        record = self._adopted.get(name)
        if record is None or not is_same_process(record.pid, record.create_time):
            return None  # never signal a pid that may have been reused
        return record.pid

    def _log_file(self, name: str) -> IO[bytes] | None:
        if self._log_dir is None:
            return None
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return (self._log_dir / f"{name.replace('@', '_')}.log").open("ab")


def _env_of(pid: int) -> str | None:
    try:
        return psutil.Process(pid).environ().get(WORKER_NAME_ENV)
    except psutil.Error:
        return None
