"""Act: the worker processes themselves. Spawn (pinned to GPUs), warm stop, kill, adopt and reap.

Each worker runs in its own session, so that Ctrl-C on the scaler's terminal reaches only the scaler (which
then drains the workers), and so that workers outlive a scaler that crashed, for the next one to adopt.
Each worker carries its node name in its environment; whatever it started (command tasks run in sessions of
their own) inherits it, which is how the processes a crashed worker left behind are found and killed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import psutil

from scalablejob.host.gpus import CUDA_VISIBLE_DEVICES, Gpu, cuda_visible_devices
from scalablejob.host.processes import WORKER_NAME_ENV, is_same_process, kill_processes_with_env
from scalablejob.scaler.forkserver import FORK_SERVER_ENV, ForkServer
from scalablejob.scaler.records import ProcessRecord

logger = logging.getLogger(__name__)


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
    """What the loop needs from a worker backend (real processes here, pods in scaler.pods; a fake in
    scalablejob.scaler.testing)."""

    def spawn(self, spec: WorkerSpec) -> ProcessRecord: ...

    def adopt(self, record: ProcessRecord) -> bool: ...

    def stop(self, name: str) -> None: ...

    def kill(self, name: str) -> None: ...

    def reap(self) -> list[Exited]: ...

    def kill_leftovers(self, name: str) -> int: ...

    def listed(self) -> list[ProcessRecord]:
        """The workers the backend finds by itself (pods by label), to adopt beside the records in Redis."""
        ...

    def let_go(self, name: str) -> None:
        """Forget a worker without touching it: another scaler acts on it now (a shared pool)."""
        ...

    def remark(self) -> str:
        """What `status` should say of the backend ('' when nothing): pods that wait for a node."""
        ...


def worker_env(base: Mapping[str, str], spec: WorkerSpec) -> dict[str, str]:
    """The environment of a worker: its GPUs through CUDA_VISIBLE_DEVICES (empty for CPU workers) and its name."""
    return {**base, CUDA_VISIBLE_DEVICES: cuda_visible_devices(spec.gpus), WORKER_NAME_ENV: spec.name}


WORKER_COMMAND = ("-m", "scalablejob", "worker")  # what follows the interpreter in a `scalablejob worker` argv


class ProcessLauncher:
    """Real `scalablejob worker` processes, started from `worker_argv` plus `-n NAME`: forked from a warm parent when
    `prewarm` is on and the fork server is warm (scaler.forkserver), else started cold as a new interpreter."""

    def __init__(
        self, worker_argv: Sequence[str], host: str, *, log_dir: Path | None = None, prewarm: bool = False,
        fork_server: Callable[[list[str]], ForkServer] = ForkServer.start,
    ) -> None:  # fmt: skip
        self._argv = list(worker_argv)
        self._host = host
        self._log_dir = log_dir
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._adopted: dict[str, ProcessRecord] = {}
        self._forked: dict[str, ProcessRecord] = {}  # children of the fork server: it reports their exits
        self._server: ForkServer | None = None
        if prewarm and tuple(self._argv[1 : len(WORKER_COMMAND) + 1]) == WORKER_COMMAND:
            self._server = fork_server(self._argv[len(WORKER_COMMAND) + 1 :])  # the worker's arguments
            atexit.register(self.close)

    @property
    def names(self) -> list[str]:
        """The workers it holds: spawned or adopted, not yet reaped."""
        return [*self._children, *self._forked, *self._adopted]

    def close(self) -> None:
        """Stop the fork server, if any (the workers live on, as those of a cold start do)."""
        if self._server is not None:
            self._server.close()

    def spawn(self, spec: WorkerSpec) -> ProcessRecord:
        if self._server is not None and self._server.ready:
            pid = self._server.fork(spec.name, worker_env({}, spec), self._log_path(spec.name))
            if pid is not None:
                return self._record(spec, pid, self._forked)
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
        return self._record(spec, process.pid, {})

    def _record(self, spec: WorkerSpec, pid: int, held: dict[str, ProcessRecord]) -> ProcessRecord:
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:  # died at once: reap() reports it
            create_time = 0.0
        gpus = tuple(gpu.uuid for gpu in spec.gpus)
        record = ProcessRecord(spec.name, pid, create_time, self._host, gpus, time.time())
        held[spec.name] = record
        return record

    def adopt(self, record: ProcessRecord) -> bool:
        """Take over a worker of a previous scaler run if that very process still runs as that worker."""
        if not is_same_process(record.pid, record.create_time) or not _is_worker_env(_env_of(record.pid), record.name):
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
        if self._server is not None:
            exited += [Exited(name, code) for name, code in self._server.exits() if name in self._forked]
            if not self._server.alive:  # nobody reports their exits any more: watch them as adopted ones
                self._adopted.update(self._forked)
                self._forked.clear()
        gone = [name for name, record in self._adopted.items() if not is_same_process(record.pid, record.create_time)]
        exited += [Exited(name, None) for name in gone]
        for item in exited:
            self._children.pop(item.name, None)
            self._forked.pop(item.name, None)
            self._adopted.pop(item.name, None)
        return exited

    def kill_leftovers(self, name: str) -> int:
        """SIGKILL every process still carrying a dead worker's name (its command tasks); returns how many."""
        return kill_processes_with_env(WORKER_NAME_ENV, name)

    def listed(self) -> list[ProcessRecord]:
        return []  # processes are found by their records alone

    def let_go(self, name: str) -> None:
        for held in (self._children, self._forked, self._adopted):
            held.pop(name, None)

    def remark(self) -> str:
        return ""

    def _signal(self, name: str, signum: int) -> None:
        pid = self._pid(name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):  # already gone: reap() will tell
                os.kill(pid, signum)

    def _pid(self, name: str) -> int | None:
        if name in self._children:
            return self._children[name].pid
        record = self._adopted.get(name) or self._forked.get(name)
        if record is None or not is_same_process(record.pid, record.create_time):
            return None  # never signal a pid that may have been reused
        return record.pid

    def _log_file(self, name: str) -> IO[bytes] | None:
        path = self._log_path(name)
        return None if path is None else path.open("ab")

    def _log_path(self, name: str) -> Path | None:
        if self._log_dir is None:
            return None
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return self._log_dir / f"{name.replace('@', '_')}.log"


def _env_of(pid: int) -> dict[str, str] | None:
    """A process's initial environment; None when it may not be read: a worker is non-dumpable, so only root reads
    it (processes.forbid_inspection)."""
    try:
        return dict(psutil.Process(pid).environ())
    except psutil.AccessDenied:
        return None
    except psutil.Error:
        return {}


def _is_worker_env(env: Mapping[str, str] | None, name: str) -> bool:
    """Whether a process's initial environment is that of worker `name`: its own, or, forked without an exec, that of
    the fork server (the worker's pid and start time, checked before, name it, and are all a scaler that is not root
    can check of a non-dumpable worker)."""
    if env is None:
        return True
    return env.get(WORKER_NAME_ENV) == name or (WORKER_NAME_ENV not in env and FORK_SERVER_ENV in env)
