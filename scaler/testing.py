"""Fakes of the scaler's process backend and recovery, so loop tests need no process and no Redis.

Time is a parameter of the loop (`tick(now)`), so tests pass a number instead of faking a clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import redis

from scalablejob.model.errors import KubernetesError
from scalablejob.scaler.pool import Exited, WorkerSpec
from scalablejob.scaler.records import ProcessRecord
from scalablejob.scaler.recovery import NO_ORPHANS

FAKE_HOST = "fakehost"


@dataclass
class FakeLauncher:
    """A process backend without processes: it records what the loop asked, and tests decide who exits."""

    host: str = FAKE_HOST
    spawned: list[WorkerSpec] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    alive: dict[str, ProcessRecord] = field(default_factory=dict)
    adoptable: set[str] = field(default_factory=set)
    fail_spawn: bool = False
    listable: set[str] = field(default_factory=set)  # alive workers that listed() finds (a shared pool's pods)
    let_gone: list[str] = field(default_factory=list)
    note: str = ""  # what remark() says
    fail_list: int = 0  # listed() raises this many times, as an API server that refuses would
    _exits: list[Exited] = field(default_factory=list)
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(10_000))

    def spawn(self, spec: WorkerSpec) -> ProcessRecord:
        if self.fail_spawn:
            raise OSError("fake spawn failure")
        self.spawned.append(spec)
        pid = next(self._pids)
        record = ProcessRecord(spec.name, pid, float(pid), self.host, tuple(gpu.uuid for gpu in spec.gpus))
        self.alive[spec.name] = record
        return record

    def adopt(self, record: ProcessRecord) -> bool:
        if record.name not in self.adoptable:
            return False
        self.alive[record.name] = record
        return True

    def stop(self, name: str) -> None:
        self.stopped.append(name)

    def kill(self, name: str) -> None:
        self.killed.append(name)
        self.exit(name, -9)

    def reap(self) -> list[Exited]:
        exits, self._exits = self._exits, []
        return exits

    def kill_leftovers(self, name: str) -> int:
        return 0

    def listed(self) -> list[ProcessRecord]:
        if self.fail_list:
            self.fail_list -= 1
            raise KubernetesError("fake: list pods refused")
        return [self.alive[name] for name in self.listable if name in self.alive]

    def let_go(self, name: str) -> None:
        self.alive.pop(name, None)
        self.let_gone.append(name)

    def remark(self) -> str:
        return self.note

    def exit(self, name: str, code: int | None) -> None:
        """Make a worker end, as reap() will report it."""
        if self.alive.pop(name, None) is not None:
            self._exits.append(Exited(name, code))

    @property
    def names(self) -> list[str]:
        return list(self.alive)


@dataclass
class FakeRecovery:
    """Records which tasks the loop asked to put back; every task it is given counts as requeued."""

    recovered: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    reconciled: list[set[str]] = field(default_factory=list)  # what live workers held, at each reconcile
    orphaned: list[dict[str, str]] = field(default_factory=list)  # what the loop called orphaned, and why
    broker_down: bool = False  # recover() raises as it would with Redis away

    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]:
        if self.broker_down:
            raise redis.ConnectionError("fake: the broker is away")
        if held:
            self.recovered.append((worker, dict(held)))
        return list(held)

    def reconcile(self, claimed: Collection[str], now: float, orphaned: Mapping[str, str] = NO_ORPHANS) -> list[str]:
        self.reconciled.append(set(claimed))
        self.orphaned.append(dict(orphaned))
        return []
