"""Three hosts, one service (issue 13), each host a network namespace with its own hostname and its own
`scalablejob scaler --max-local N`, all on one Redis in a namespace of its own (tests/multihost/netns_rig.py):

- a burst of 12 long tasks with max 6 gives exactly 6 replicas in total, spread over the hosts by capacity;
- kill -9 of every process of one host (the leader's, then a follower's): its tasks run again on the others within
  the host-loss bound, 6 replicas again, every request ends with exactly one final entry;
- a partition of one host for longer than the bound, then back: no second final entry for any request, and the
  host rejoins.
The Sentinel failover scenario is in test_multihost_failover.py (run it alone: it needs 3 Redis and 3 Sentinels).
"""

from __future__ import annotations

import time

import pytest
from multihost_fleet import JOIN_DEADLINE_S, MAX_REPLICAS, Fleet, Snapshot, twice, wait_until_absent
from netns_rig import HOSTS, NetnsRig

from conftest import wait_until

pytest_plugins = ["multihost_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TASK_S = 20.0  # longer than the host-loss bound, so a lost task is still running elsewhere when it is re-run
HOST_LOSS_BOUND_S = 15.0  # issue 13: a lost host's tasks run again elsewhere within this
PARTITION_S = 25.0  # longer than the bound: the partitioned host is declared dead while cut off
LATE_WRITE_WINDOW_S = 10.0  # after the heal, how long a second final entry is watched for


def test_a_burst_runs_max_replicas_in_total_spread_over_the_hosts_by_capacity(fleet: Fleet) -> None:
    capacities = dict(zip(HOSTS, (2, 2, 4), strict=True))
    fleet.join(list(capacities.values()))

    fleet.burst(12, TASK_S)

    def recorded() -> Snapshot | None:
        """All busy, and each scaler's record counts the workers it runs (it is written once per pass)."""
        snapshot = fleet.all_busy()
        counts = snapshot.busy_by_host()
        return snapshot if all(snapshot.hosts[host]["replicas"] == counts[host] for host in HOSTS) else None

    snapshot = wait_until(recorded, 10, "the scalers' records never counted the workers they run")
    print(snapshot.describe())
    counts = snapshot.busy_by_host()
    assert all(1 <= counts[host] <= capacities[host] for host in HOSTS), snapshot.describe()
    assert sum(entry["replicas"] for entry in snapshot.hosts.values()) == MAX_REPLICAS, snapshot.describe()
    assert {host: snapshot.hosts[host]["share"] for host in HOSTS} == dict(counts), snapshot.describe()
    assert all(abs(snapshot.document["takenAt"] - entry["heartbeat"]) < 5 for entry in snapshot.hosts.values())
    assert fleet.seen_workers <= MAX_REPLICAS, f"{fleet.seen_workers} workers at once: more than max"
    assert not fleet.restarted()


@pytest.mark.parametrize("role", ["leader", "follower"])
def test_a_lost_host_has_its_tasks_run_again_elsewhere_within_the_bound(
    fleet: Fleet, netns: NetnsRig, role: str
) -> None:
    fleet.join((3, 3, 3))  # 6 fit on any two hosts
    tokens = fleet.burst(12, TASK_S)
    snapshot = fleet.all_busy()
    leader = snapshot.leader()
    assert leader, snapshot.describe()
    lost = leader if role == "leader" else next(host for host in HOSTS if host != leader)
    held = snapshot.held_by(lost)
    assert held, snapshot.describe()

    killed_at = time.time()
    assert netns.kill_host(lost) > 0

    delays = fleet.rerun_after(held, lost, killed_at, 3 * HOST_LOSS_BOUND_S)
    print(f"host loss ({role}): {lost}'s tasks ran again after {sorted(delays.values())} s")
    survivors = [host for host in HOSTS if host != lost]
    snapshot = fleet.all_busy(survivors)
    assert lost not in snapshot.alive(), snapshot.describe()
    document = fleet.settle(tokens)
    assert not twice(document), f"second final entries: {twice(document)}"
    assert all(document["finals"][rid] == 1 for rid in tokens)
    assert not fleet.restarted(survivors), "a surviving scaler exited"
    assert max(delays.values()) <= HOST_LOSS_BOUND_S, f"re-run after {delays} s: over the bound (all else held)"


def test_a_partitioned_host_writes_no_second_result_and_rejoins(fleet: Fleet, netns: NetnsRig) -> None:
    fleet.join((3, 3, 3))
    tokens = fleet.burst(MAX_REPLICAS, TASK_S)  # no backlog: the cut-off host's tasks re-run at once on the others
    snapshot = fleet.all_busy()
    cut = max(HOSTS, key=lambda host: snapshot.busy_by_host()[host])
    held = snapshot.held_by(cut)

    cut_at = time.time()
    netns.partition(cut)
    delays = fleet.rerun_after(held, cut, cut_at, 3 * HOST_LOSS_BOUND_S)
    print(f"partition: {cut}'s tasks ran again after {sorted(delays.values())} s")
    assert cut not in fleet.alive()
    time.sleep(max(0.0, cut_at + PARTITION_S - time.time()))  # the scenario: the host stays cut off this long
    netns.heal(cut)

    wait_until(lambda: cut in fleet.alive(), JOIN_DEADLINE_S, f"{cut} never rejoined", 0.5)
    log = fleet.log(cut)  # its lease expired while it was cut off, held by nobody: it keeps it, and its workers
    assert "taken again" in log and "declared dead by the others: rejoining as" in log  # ... as a new member
    assert not fleet.restarted(), f"scalers exited: {fleet.exit_reasons()}"
    late_writes = fleet.worker_log_lines(cut, "superseded")
    print(f"partition: {len(late_writes)} late result(s) of {cut} refused: {late_writes}")
    document = fleet.settle(tokens)

    def second_final() -> dict[str, int] | None:
        latest = fleet.delivery(tokens)
        return twice(latest) if latest else None

    late = wait_until_absent(second_final, LATE_WRITE_WINDOW_S)
    assert not late, f"second final entries after the heal: {late}"
    assert all(document["finals"][rid] == 1 for rid in tokens)
    assert all(len(fleet.started_on(rid)) == 2 for rid in held), {rid: fleet.started_on(rid) for rid in held}
