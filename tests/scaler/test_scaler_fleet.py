"""The leader's pass at fleet size (issue 26, goal 4): 10 000 simulated workers on 1 000 hosts, as records in a real
redis-server (tests/support/fleet.py), and the real Scaler with its real Redis parts leading them.

The goal is 50 ms of Redis time and 0.1 s in all per pass at 1 000 workers; bench/scaler_fleet.py measures it, wall
time included. Here, at ten times that, the pass's own CPU time must stay within a bound with room to spare: it took
2 to 3 s when the split handed out one worker at a time scanning every host, and decoded every presence record every
pass. CPU time, not wall time: with other tests on the same 2 cores, the same pass took 747 ms of wall time in CI.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from scalablejob.store.host_records import read_plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from fleet import PASS_INTERVAL_S
from fleet_leader import SERVICE, measure, simulate, split_cases, split_problems

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WORKERS = 10_000
PASS_CPU_BOUND_MS = 300.0  # about 60 ms here alone; 0.1 s in all is the goal at 1 000 workers
REDIS_BOUND_MS = 50.0  # the goal, at 1 000 workers; about 4 ms here


def test_a_leaders_pass_over_10_000_workers_on_1_000_hosts_stays_within_the_goal_and_splits_right(
    redis_url: str,
) -> None:
    # given the records of 10 000 workers on 1 000 hosts, a backlog for 15 000, and the leader after its first pass
    desired = split_cases(WORKERS)["up"]
    simulation = simulate(redis_url, WORKERS, desired)
    try:
        now = time.monotonic()
        simulation.fleet.heartbeat()
        simulation.scaler.tick(now)  # the first pass sees every record for the first time

        # when the fleet beats for a pass, and the leader passes again
        simulation.fleet.heartbeat()
        cost, _ = measure(simulation, now + PASS_INTERVAL_S)

        # then the pass stays within its bounds, and its plan splits the decision right across the hosts
        assert cost.cpu_ms < PASS_CPU_BOUND_MS, cost
        assert cost.redis_ms < REDIS_BOUND_MS, cost
        assert split_problems("up", desired, simulation.fleet, read_plan(simulation.client, SERVICE)) == []
    finally:
        simulation.stop()
