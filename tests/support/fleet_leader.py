"""The leader of a simulated fleet (tests/support/fleet.py): the real Scaler with its real Redis parts, wired as
scaler.main wires them, with a FakeLauncher for its processes; what a pass costs Redis; and the split's rules, checked
on the plan the leader published. Shared by bench/scaler_fleet.py and tests/scaler/test_scaler_fleet.py."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import redis
from backlog import fill
from fleet import SimulatedFleet

from scalablejob import JobClient
from scalablejob.api.celery_app import make_app
from scalablejob.scaler.history import HistoryWriter
from scalablejob.scaler.loop import Fleet, Parts, Scaler
from scalablejob.scaler.membership import Membership
from scalablejob.scaler.metrics import RedisMetrics
from scalablejob.scaler.policy import Policy
from scalablejob.scaler.reconciler import BackgroundRecovery
from scalablejob.scaler.records import ScalerStore
from scalablejob.scaler.recovery import NO_ORPHANS, Recoverer, Recovery
from scalablejob.scaler.testing import FakeLauncher
from scalablejob.store.history import HistoryStore
from scalablejob.store.host_records import SharePlan

SERVICE = "fleet"
AVG_WAITING = 2.0
RECONCILE_WAIT_S = 30.0


class CountedRecovery:
    """A Recoverer that counts the reconciles of the one it wraps (run on the reconciler's thread)."""

    def __init__(self, inner: Recoverer) -> None:
        self.inner = inner
        self.reconciles = 0

    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]:
        return self.inner.recover(worker, held, reason)

    def reconcile(self, claimed: Collection[str], now: float, orphaned: Mapping[str, str] = NO_ORPHANS) -> list[str]:
        self.reconciles += 1
        return self.inner.reconcile(claimed, now, orphaned)


def command_stats(client: redis.Redis) -> tuple[int, int]:
    """(calls, usec) over every command Redis ran, INFO itself left out: a script's usec includes the commands it
    runs, which are counted again (an upper bound)."""
    stats = client.info("commandstats")
    rows = [row for name, row in stats.items() if name != "cmdstat_info"]
    return sum(int(row["calls"]) for row in rows), sum(int(row["usec"]) for row in rows)


@dataclass(frozen=True)
class Simulation:
    client: redis.Redis
    fleet: SimulatedFleet
    scaler: Scaler
    recovery: BackgroundRecovery
    counted: CountedRecovery  # the reconciler's Recovery

    def stop(self) -> None:
        self.recovery.stop()
        self.client.close()


def leader(client: redis.Redis, url: str, fleet: SimulatedFleet) -> Simulation:
    """The leader host's scaler as scaler.main builds it, with a FakeLauncher for its processes."""
    host = fleet.leader
    launcher = FakeLauncher(host=host.name, adoptable={worker.name for worker in host.workers})
    background = CountedRecovery(Recovery(make_app(SERVICE, url), redis.Redis.from_url(url), SERVICE))
    recovery = BackgroundRecovery(Recovery(make_app(SERVICE, url), client, SERVICE), background)
    parts = Parts(
        metrics=RedisMetrics(client, SERVICE),
        launcher=launcher,
        recovery=recovery,
        store=ScalerStore(client, SERVICE, host.name),
        membership=Membership(client, SERVICE, host.name, host.capacity),
        history=HistoryWriter(HistoryStore(client, SERVICE), SERVICE),
    )
    policy = Policy(min=0, max=fleet.capacity, avg_waiting_length=AVG_WAITING)
    return Simulation(client, fleet, Scaler(Fleet(SERVICE, host.name), policy, parts), recovery, background)


@dataclass(frozen=True)
class PassCost:
    redis_ms: float
    commands: float
    wall_ms: float
    cpu_ms: float  # the pass's own CPU (its thread's): unlike its wall time, the same on a loaded machine


def measure(simulation: Simulation, now: float) -> tuple[PassCost, bool]:
    """One pass alone; True when it handed a reconcile (waited for here)."""
    reconciles = simulation.counted.reconciles
    calls, usec = command_stats(simulation.client)
    began, began_cpu = time.perf_counter(), time.thread_time()
    simulation.scaler.tick(now)
    wall, cpu = time.perf_counter() - began, time.thread_time() - began_cpu
    if not simulation.recovery.reconciler.wait_idle(RECONCILE_WAIT_S):
        raise RuntimeError(f"a reconcile took over {RECONCILE_WAIT_S} s")
    calls_after, usec_after = command_stats(simulation.client)
    cost = PassCost((usec_after - usec) / 1000, calls_after - calls, wall * 1000, cpu * 1000)
    return cost, simulation.counted.reconciles > reconciles


def simulate(url: str, workers: int, desired: int | None = None) -> Simulation:
    """The fleet's records in the Redis at `url`, a backlog that makes the policy want `desired` workers (None: as
    many as run now), and the leader, started (it adopted its host's workers)."""
    client = redis.Redis.from_url(url)
    fleet = SimulatedFleet.build(client, SERVICE, workers)
    fleet.write()
    running = sum(len(worker.held) for worker in fleet.workers)
    wanted = len(fleet.workers) if desired is None else desired
    with JobClient(SERVICE, url) as job_client:
        fill(client, job_client, max(2, round(wanted * AVG_WAITING) - running))
    simulation = leader(client, url, fleet)
    simulation.scaler.start(time.monotonic())
    return simulation


def split_cases(workers: int) -> dict[str, int]:
    """The decisions whose split is checked, by the desired count: holding, up to 75 % of the capacity, past it (every
    host at its max-local), down to 70 % of the workers."""
    replicas = workers // 10 * 10
    capacity = replicas * 2
    return {"hold": replicas, "up": capacity * 3 // 4, "past capacity": capacity * 2, "down": replicas * 7 // 10}


def split_problems(case: str, desired: int, fleet: SimulatedFleet, plan: SharePlan | None) -> list[str]:
    """What is wrong with the leader's plan for a decision of `desired` workers (nothing: it is right): the shares add
    up to the decision and cover every host, each within its busy workers and its capacity; warm workers kept when
    growing, none started when shrinking; spread by capacity; every host at its max-local past the capacity."""
    if plan is None:
        return ["no plan published"]
    hosts = {host.name: host for host in fleet.hosts}
    busy = sum(host.busy for host in fleet.hosts)
    expected = max(busy, min(desired, fleet.capacity))
    problems = []
    if plan.desired != expected or sum(plan.shares.values()) != expected:
        problems.append(f"desired {plan.desired}, shares add up to {sum(plan.shares.values())}: expected {expected}")
    if set(plan.shares) != set(hosts):
        problems.append(f"{len(plan.shares)} hosts have a share: expected all {len(hosts)}")
    for name, share in plan.shares.items():
        host = hosts[name]
        if not host.busy <= share <= host.capacity:
            problems.append(f"{name}: share {share} outside busy {host.busy} .. capacity {host.capacity}")
        if case == "past capacity" and share != host.capacity:
            problems.append(f"{name}: share {share}, expected its max-local {host.capacity}")
        if case in ("hold", "up") and share < len(host.workers):
            problems.append(f"{name}: share {share} below its {len(host.workers)} warm workers")
        if case == "down" and share > len(host.workers):
            problems.append(f"{name}: share {share} starts workers while the service shrinks")
    fills = [share / hosts[name].capacity for name, share in plan.shares.items()]
    bound = 1 / min(host.capacity for host in fleet.hosts)
    if case == "up" and max(fills) - min(fills) > bound + 1e-9:
        problems.append(f"fill by capacity from {min(fills):.2f} to {max(fills):.2f}: expected within {bound:.2f}")
    return problems
