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
Last, per 100 workers and per second (4 passes): the leader's Redis time and CPU, and the Redis time of the fleet's
own writes (measured the same way around them), for the capacity model.
Run: python bench/scaler_fleet.py [--workers N ...] [--runs N] [--passes N] [--no-split] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # one copy of the simulation

from fleet import PASS_INTERVAL_S
from fleet_leader import (
    SERVICE,
    PassCost,
    Simulation,
    command_stats,
    measure,
    simulate,
    split_cases,
    split_problems,
)

from scalablejob.local.redis_server import RedisServer
from scalablejob.store.host_records import read_plan
from scalablejob.store.presence import HEARTBEAT_S

SIZES = (100, 1_000, 10_000)
RUNS = 3
PASSES = 40  # 10 s of passes at 0.25 s: every worker beats 5 times, the reconciler runs 3 or 4 times
GOAL_REDIS_MS = 50.0
GOAL_WALL_S = 0.1


@contextmanager
def simulated(workers: int, desired: int | None = None) -> Iterator[Simulation]:
    """A private Redis with the fleet's records and a backlog for `desired` workers, and the leader, started."""
    with tempfile.TemporaryDirectory(prefix="scaler-fleet-") as data, RedisServer(data, persistent=False) as server:
        simulation = simulate(server.url, workers, desired)
        try:
            yield simulation
        finally:
            simulation.stop()


@dataclass(frozen=True)
class RunFigures:
    plain: PassCost  # medians of the passes without a reconcile
    reconciling: PassCost | None  # ... of those with one (None if none ran)
    writes_ms: float  # the fleet's own writes between two passes (its scalers' beats, its workers' heartbeats)


def one_run(workers: int, passes: int) -> RunFigures:
    """One fleet and its leader, `passes` passes (after a first one, left out), each after the fleet's writes."""
    plain: list[PassCost] = []
    reconciling: list[PassCost] = []
    writes: list[float] = []
    with simulated(workers) as simulation:
        now = time.monotonic()
        simulation.fleet.heartbeat()
        simulation.scaler.tick(now)  # the first pass sees every record for the first time: left out
        for _ in range(passes):
            now += PASS_INTERVAL_S
            _, usec = command_stats(simulation.client)
            simulation.fleet.heartbeat()
            writes.append((command_stats(simulation.client)[1] - usec) / 1000)
            cost, reconciled = measure(simulation, now)
            (reconciling if reconciled else plain).append(cost)
    return RunFigures(medians(plain), medians(reconciling) if reconciling else None, statistics.median(writes))


def medians(costs: list[PassCost]) -> PassCost:
    return PassCost(
        *(statistics.median(getattr(cost, name) for cost in costs) for name in PassCost.__dataclass_fields__)
    )


# ---- one decision, split across the hosts ---------------------------------------------------------------------------


def check_split(workers: int) -> list[str]:
    """Each case's plan, checked against the split's rules; returns what is wrong (nothing: all right)."""
    wrong = []
    for case, desired in split_cases(workers).items():
        with simulated(workers, desired) as simulation:
            simulation.fleet.heartbeat()
            simulation.scaler.tick(time.monotonic())
            plan = read_plan(simulation.client, SERVICE)
            wrong += [f"{case}: {problem}" for problem in split_problems(case, desired, simulation.fleet, plan)]
    return wrong


# ---- report ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--passes", type=int, default=PASSES)
    parser.add_argument("--no-split", action="store_true", help="skip the split checks")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    options = parser.parse_args()
    print(f"medians of {options.runs} run(s) x {options.passes} passes; goals: Redis <= {GOAL_REDIS_MS:g} ms, "
          f"pass <= {GOAL_WALL_S * 1000:g} ms (ratio = figure / goal, <= 1 meets it)")  # fmt: skip
    head = f"{'workers':>8} {'hosts':>6} | {'Redis ms':>9} {'ratio':>6} | {'commands':>8} | {'wall ms':>8} {'ratio':>6}"
    print(f"{head} | with a reconcile: Redis ms, commands, wall ms | split")
    rows = {}
    figures: dict[int, dict[str, object]] = {}
    for workers in options.workers:
        runs = [one_run(workers, options.passes) for _ in range(options.runs)]
        plain = medians([run.plain for run in runs])
        with_reconcile = [run.reconciling for run in runs if run.reconciling is not None]
        rows[workers] = (plain, statistics.median(run.writes_ms for run in runs))
        split = "-" if options.no_split else ("right" if not (wrong := check_split(workers)) else "; ".join(wrong[:5]))
        goals = {"goal_redis_ms": GOAL_REDIS_MS, "goal_wall_ms": GOAL_WALL_S * 1e3}
        figures[workers] = {"redis_ms": plain.redis_ms, "commands": plain.commands, "wall_ms": plain.wall_ms,
                            "split": split, **goals}  # fmt: skip
        extra = medians(with_reconcile) if with_reconcile else None
        extra_text = f"{extra.redis_ms:8.2f} {extra.commands:6.0f} {extra.wall_ms:8.1f}" if extra else "-"
        print(
            f"{workers:>8} {workers // 10:>6} | {plain.redis_ms:9.2f} {plain.redis_ms / GOAL_REDIS_MS:6.3f} | "
            f"{plain.commands:8.0f} | {plain.wall_ms:8.1f} {plain.wall_ms / (GOAL_WALL_S * 1000):6.3f} | "
            f"{extra_text} | {split}"
        )  # fmt: skip
    passes_per_s = 1 / PASS_INTERVAL_S
    print(f"per 100 workers, at {passes_per_s:g} passes a second: the leader's Redis time and CPU (its pass's wall "
          "time), and the Redis time of the fleet's own writes (each host's scaler beats every pass, each worker "
          f"every {HEARTBEAT_S:g} s), in ms a second")  # fmt: skip
    for workers, (cost, writes_ms) in rows.items():
        per = 100 / workers * passes_per_s
        leader = f"leader Redis {cost.redis_ms * per:.3f}, leader CPU {cost.wall_ms * per:.2f}"
        print(f"  at {workers:>5} workers: {leader}, fleet's writes Redis {writes_ms * per:.3f}")
    if options.json:
        options.json.write_text(json.dumps({"runs": options.runs, "passes": options.passes, "workers": figures}))


if __name__ == "__main__":
    main()
