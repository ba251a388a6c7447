"""A simulated fleet in a real Redis: many hosts' scalers and their workers, as records only, with no process.

Each host's scaler record is written by a real `Membership.beat`, as that host's scaler writes it every pass; each
worker's presence is the real `Presence` record, written to its field of the presence hash as the worker's reporter
writes it (one HSET; here pipelined, since the writers would be separate processes). The leader's own workers get
process records (`ScalerStore.save`) that a FakeLauncher adopts. Hosts alternate between two sizes; every host runs
half its capacity (its `--max-local`), and half of each host's workers are busy with one task each, so that the
split of a decision can be checked against the capacities. `heartbeat()` is what the fleet writes between two
passes of the leader: every host's scaler beats, and the share of workers whose heartbeat falls in that time
rewrite their record with a new sequence number.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import redis

from scalablejob.model import keys
from scalablejob.scaler.membership import Membership
from scalablejob.scaler.records import ProcessRecord, ScalerStore
from scalablejob.store.presence import HEARTBEAT_S, Presence, WorkerState

HOST_SIZES = (5, 15)  # workers per host, alternating: 10 on average
CAPACITY_FACTOR = 2  # each host may run twice the workers it runs now
PASS_INTERVAL_S = 0.25  # the scaler's default pass interval (scaler.wakeup.DEFAULT_INTERVAL_S)


@dataclass
class SimHost:
    """One host: its scaler's membership (None for the leader's host, whose real scaler writes its own) and the
    presence of its workers."""

    name: str
    capacity: int
    workers: list[Presence]
    membership: Membership | None = None

    @property
    def busy(self) -> int:
        return sum(1 for worker in self.workers if worker.state is WorkerState.BUSY)


@dataclass
class SimulatedFleet:
    """`workers` workers on `workers // 10` hosts of service `service`; the first host is the leader's."""

    client: redis.Redis
    service: str
    hosts: list[SimHost] = field(default_factory=list)
    _turn: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def build(cls, client: redis.Redis, service: str, workers: int) -> SimulatedFleet:
        fleet = cls(client, service)
        count = max(1, workers // (sum(HOST_SIZES) // len(HOST_SIZES)))
        for index, size in zip(range(count), itertools.cycle(HOST_SIZES), strict=False):
            name = f"host-{index:04d}"
            host = SimHost(name, size * CAPACITY_FACTOR, [_worker(service, name, index, n, size) for n in range(size)])
            if index > 0:
                host.membership = Membership(client, service, name, host.capacity)
            fleet.hosts.append(host)
        return fleet

    @property
    def leader(self) -> SimHost:
        return self.hosts[0]

    @property
    def workers(self) -> list[Presence]:
        return [worker for host in self.hosts for worker in host.workers]

    @property
    def capacity(self) -> int:
        return sum(host.capacity for host in self.hosts)

    def write(self) -> None:
        """Every record, as the fleet's scalers and workers write them when they start; the leader's process
        records, for its scaler to adopt."""
        self._beat_hosts()
        self._publish(self.workers)
        store = ScalerStore(self.client, self.service, self.leader.name)
        for record in self.leader_records():
            store.save(record)

    def leader_records(self) -> list[ProcessRecord]:
        return [ProcessRecord(w.name, w.pid, float(w.pid), self.leader.name) for w in self.leader.workers]

    def heartbeat(self, interval_s: float = PASS_INTERVAL_S) -> int:
        """What the fleet writes in `interval_s`: every other host's scaler beats once, and the workers whose
        heartbeat falls in that time (one in HEARTBEAT_S / interval_s, in turn) rewrite their record. Returns how
        many worker records were written."""
        self._beat_hosts()
        every = max(1, round(HEARTBEAT_S / interval_s))
        turn = next(self._turn) % every
        written, index = [], 0
        for host in self.hosts:
            for n, worker in enumerate(host.workers):
                if index % every == turn:
                    host.workers[n] = replace(worker, heartbeat=time.time(), seq=worker.seq + 1)
                    written.append(host.workers[n])
                index += 1
        self._publish(written)
        return len(written)

    def _beat_hosts(self) -> None:
        for host in self.hosts:
            if host.membership is not None:
                host.membership.beat(len(host.workers), host.busy, time.time())

    def _publish(self, workers: list[Presence]) -> None:
        key = keys.worker_presence(self.service)
        with self.client.pipeline(transaction=False) as pipe:
            for worker in workers:
                pipe.hset(key, worker.name, worker.encode())
            pipe.execute()


def _worker(service: str, host: str, host_index: int, n: int, size: int) -> Presence:
    """A worker named as a scaler names it (`<service>-<hex>@<host>`); the first half of each host's are busy."""
    name = f"{service}-{host_index:04x}{n:04x}@{host}"
    busy = n < size // 2
    held = {f"task-{host_index}-{n}": f"tag-{host_index}-{n}"} if busy else {}
    state = WorkerState.BUSY if busy else WorkerState.IDLE
    return Presence(name, 100_000 + host_index * 100 + n, host, state, "", held, time.time(), 1)
