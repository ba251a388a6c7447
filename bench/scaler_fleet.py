"""The scaler at fleet size, by simulation (issue 26, goal 4): what the leader's pass costs Redis and the wall clock
with the records of 100, 1 000 and 10 000 workers (10 a host on average) in a private redis-server.

The fleet is records only (tests/support/fleet.py): every host's scaler record written by a real Membership, every
worker's presence record as its reporter writes it, a backlog of real queued requests (tests/support/backlog.py).
The leader is the real Scaler with its real Redis parts (metrics, records and lease, membership and leader lease,
history, the reconciler on its thread, as scaler.main wires them); only its process backend is a FakeLauncher,
which adopts the leader host's workers and starts nothing. Between two passes the fleet writes what it would in
0.25 s (every host's scaler beats, one worker in eight rewrites its record); each pass is then measured alone:
- Redis time: the sum of `usec` over INFO commandstats, before and after (INFO itself left out). A script's time
  includes the commands it runs, which are counted again: an upper bound, and the scaler's pass runs few scripts;
- commands: the calls in the same figures (those run inside scripts included);
- wall: the pass (`tick`) on this process's clock.
A pass that handed a snapshot to the reconciler waits for it before the second INFO; its figures are shown apart
(a reconcile runs off the pass, at most every 3 s, and reads the backlog; bench/reconcile_depth.py measures it).
Then one decision per case is checked, split across the hosts: holding, up to 75 % of the capacity, past the
capacity (every host at its max-local) and down to 70 % of the workers (busy workers kept).
Figures are medians over the passes of a run, then over runs; goals: <= 50 ms of Redis time, <= 0.1 s in all.
Run: python bench/scaler_fleet.py [--workers N ...] [--runs N] [--passes N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # one copy of the simulation

from backlog import fill
from fleet import PASS_INTERVAL_S, SimulatedFleet

from scalablejob import JobClient
from scalablejob.api.celery_app import make_app
from scalablejob.local.redis_server import RedisServer
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
from scalablejob.store.host_records import SharePlan, read_plan

SERVICE = "fleet"
SIZES = (100, 1_000, 10_000)
RUNS = 3
PASSES = 40  # 10 s of passes at 0.25 s: every worker beats 5 times, the reconciler runs 3 or 4 times
AVG_WAITING = 2.0
GOAL_REDIS_MS = 50.0
GOAL_WALL_S = 0.1
RECONCILE_WAIT_S = 30.0


@dataclass(frozen=True)
class PassCost:
    redis_ms: float
    commands: float
    wall_ms: float


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
    """(calls, usec) over every command Redis ran, INFO itself left out."""
    stats = client.info("commandstats")
    rows = [row for name, row in stats.items() if name != "cmdstat_info"]
    return sum(int(row["calls"]) for row in rows), sum(int(row["usec"]) for row in rows)


@contextmanager
def simulated(workers: int, desired: int | None = None) -> Iterator[Simulation]:
    """A private Redis with the fleet's records and a backlog for `desired` workers (None: as many as run now),
    and the leader, started (it adopted its host's workers)."""
    with tempfile.TemporaryDirectory(prefix="scaler-fleet-") as data, RedisServer(data, persistent=False) as server:
        client = redis.Redis.from_url(server.url)
        fleet = SimulatedFleet.build(client, SERVICE, workers)
        fleet.write()
        running = sum(len(worker.held) for worker in fleet.workers)
        wanted = len(fleet.workers) if desired is None else desired
        with JobClient(SERVICE, server.url) as job_client:
            fill(client, job_client, max(2, round(wanted * AVG_WAITING) - running))
        simulation = leader(client, server.url, fleet)
        simulation.scaler.start(time.monotonic())
        try:
            yield simulation
        finally:
            simulation.recovery.stop()


@dataclass(frozen=True)
class Simulation:
    client: redis.Redis
    fleet: SimulatedFleet
    scaler: Scaler
    recovery: BackgroundRecovery
    counted: CountedRecovery  # the reconciler's Recovery


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


def measure(simulation: Simulation, now: float) -> tuple[PassCost, bool]:
    """One pass alone; True when it handed a reconcile (waited for here)."""
    reconciles = simulation.counted.reconciles
    calls, usec = command_stats(simulation.client)
    began = time.perf_counter()
    simulation.scaler.tick(now)
    wall = time.perf_counter() - began
    if not simulation.recovery.reconciler.wait_idle(RECONCILE_WAIT_S):
        raise RuntimeError(f"a reconcile took over {RECONCILE_WAIT_S} s")
    calls_after, usec_after = command_stats(simulation.client)
    cost = PassCost((usec_after - usec) / 1000, calls_after - calls, wall * 1000)
    return cost, simulation.counted.reconciles > reconciles


def one_run(workers: int, passes: int) -> tuple[PassCost, PassCost | None]:
    """Medians of the passes without a reconcile, and of those with one (None if none ran)."""
    plain: list[PassCost] = []
    reconciling: list[PassCost] = []
    with simulated(workers) as simulation:
        now = time.monotonic()
        simulation.fleet.heartbeat()
        simulation.scaler.tick(now)  # the first pass sees every record for the first time: left out
        for _ in range(passes):
            now += PASS_INTERVAL_S
            simulation.fleet.heartbeat()
            cost, reconciled = measure(simulation, now)
            (reconciling if reconciled else plain).append(cost)
    return medians(plain), medians(reconciling) if reconciling else None


def medians(costs: list[PassCost]) -> PassCost:
    return PassCost(*(statistics.median(getattr(cost, name) for cost in costs) for name in PassCost.__dataclass_fields__))


# ---- one decision, split across the hosts ---------------------------------------------------------------------------


def check_split(workers: int) -> list[str]:
    """Each case's plan, checked against the split's rules; returns what is wrong (nothing: all right)."""
    replicas = workers // 10 * 10
    capacity = replicas * 2
    cases = {"hold": replicas, "up": math.ceil(capacity * 0.75), "past capacity": capacity * 2, "down": replicas * 7 // 10}
    wrong = []
    for case, desired in cases.items():
        with simulated(workers, desired) as simulation:
            simulation.fleet.heartbeat()
            simulation.scaler.tick(time.monotonic())
            plan = read_plan(simulation.client, SERVICE)
            wrong += [f"{case}: {problem}" for problem in split_problems(case, desired, simulation.fleet, plan)]
    return wrong


def split_problems(case: str, desired: int, fleet: SimulatedFleet, plan: SharePlan | None) -> list[str]:
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


# ---- report ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--passes", type=int, default=PASSES)
    parser.add_argument("--no-split", action="store_true", help="skip the split checks")
    options = parser.parse_args()
    print(f"medians of {options.runs} run(s) x {options.passes} passes; goals: Redis <= {GOAL_REDIS_MS:g} ms, "
          f"pass <= {GOAL_WALL_S * 1000:g} ms (ratio = figure / goal, <= 1 meets it)")  # fmt: skip
    print(f"{'workers':>8} {'hosts':>6} | {'Redis ms':>9} {'ratio':>6} | {'commands':>8} | {'wall ms':>8} {'ratio':>6} | "
          "with a reconcile: Redis ms, commands, wall ms | split")  # fmt: skip
    rows = {}
    for workers in options.workers:
        runs = [one_run(workers, options.passes) for _ in range(options.runs)]
        plain = medians([run[0] for run in runs])
        with_reconcile = [run[1] for run in runs if run[1] is not None]
        rows[workers] = plain
        split = "-" if options.no_split else ("right" if not (wrong := check_split(workers)) else "; ".join(wrong[:5]))
        extra = medians(with_reconcile) if with_reconcile else None
        extra_text = f"{extra.redis_ms:8.2f} {extra.commands:6.0f} {extra.wall_ms:8.1f}" if extra else "-"
        print(
            f"{workers:>8} {workers // 10:>6} | {plain.redis_ms:9.2f} {plain.redis_ms / GOAL_REDIS_MS:6.3f} | "
            f"{plain.commands:8.0f} | {plain.wall_ms:8.1f} {plain.wall_ms / (GOAL_WALL_S * 1000):6.3f} | "
            f"{extra_text} | {split}"
        )  # fmt: skip
    for workers, cost in rows.items():
        per = 100 / workers
        print(f"per 100 workers at {workers}: Redis {cost.redis_ms * per:.3f} ms, wall {cost.wall_ms * per:.2f} ms per pass")


if __name__ == "__main__":
    main()
