"""Redis that fails over under three hosts (issue 13): a master and two replicas, each with a Sentinel (quorum 2,
down after 1 s), in namespaces of their own; three hosts' scalers, their workers, `status` and the client all on the
broker URL `sentinel://...;sentinel://...;sentinel://.../0?master=mymaster&replicas=1` (kombu's sentinel form;
`replicas=1`: a put is acknowledged only once a replica has it). kill -9 of the master in the middle of a burst:
Sentinel promotes a replica; then that new master freezes until Sentinel promotes the other one, as a loaded
2-core machine once made it do (the first new master judged down a second after its promotion: two masters for a
while, and what the first one took is dropped when it rejoins as a replica). Nothing is restarted, by hand or by a
scaler's exit, and every acknowledged request ends with exactly one final entry.

Runs alone: `pytest tests/multihost/test_multihost_failover.py` (3 Redis, 3 Sentinels, 3 scalers: about a minute).
"""

from __future__ import annotations

import time
import uuid

import pytest
from multihost_fleet import POLL_S, Fleet, twice
from netns_rig import REDIS_NODES, NetnsRig

from conftest import wait_until

pytest_plugins = ["multihost_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TASK_S = 8.0
PUTS = 16
PUT_GAP_S = 0.5  # the burst lasts about 8 s: the failover lands in its middle
KILL_AFTER_ACKS = 6
FAILOVER_DEADLINE_S = 30.0  # down after 1 s, then a vote and a promotion: a few seconds
BURST_DEADLINE_S = 90.0  # a put in flight during the failover retries until its client gives up
SETTLE_AFTER_FAILOVER_S = 150.0


def test_acknowledged_requests_survive_two_sentinel_failovers_mid_burst(
    sentinel_fleet: Fleet, sentinel_netns: NetnsRig
) -> None:
    fleet, rig = sentinel_fleet, sentinel_netns
    fleet.join((2, 2, 2))
    tokens = [f"f{n:02d}{uuid.uuid4().hex[:6]}" for n in range(PUTS)]
    answers_log = fleet.put_in_background(tokens, TASK_S, PUT_GAP_S)

    def acked() -> list[str]:
        return [answer["requestId"] for answer in fleet.answers(answers_log) if "index" in answer]

    def some_running() -> bool:
        snapshot = fleet.status()
        return len(acked()) >= KILL_AFTER_ACKS and bool(snapshot and snapshot.workers("busy"))

    wait_until(some_running, 60, f"never {KILL_AFTER_ACKS} puts acknowledged and a worker busy", POLL_S)
    old_master = rig.address(REDIS_NODES[0])
    killed_at = time.time()
    rig.kill(rig.redis_servers[REDIS_NODES[0]])

    new_master = wait_until(
        lambda: (address := rig.master()) and address != old_master and address,
        FAILOVER_DEADLINE_S, "Sentinel never promoted a replica", 0.2,
    )  # fmt: skip
    failover_s = time.time() - killed_at
    (promoted,) = [rig.redis_servers[node] for node in REDIS_NODES if rig.address(node) == new_master]
    with rig.frozen(promoted):  # until the Sentinels give up on it and promote the last one
        last_master = wait_until(
            lambda: (address := rig.master()) and address not in (old_master, new_master) and address,
            FAILOVER_DEADLINE_S, "Sentinel never failed over from the frozen new master", 0.2,
        )  # fmt: skip
    second_s = time.time() - killed_at
    (putter,) = fleet.putters
    wait_until(lambda: putter.poll() is not None, BURST_DEADLINE_S, "the burst's puts never all returned", POLL_S)

    answers = fleet.answers(answers_log)
    acknowledged = [a["requestId"] for a in answers if "index" in a]
    refused = {a["requestId"]: a["refused"] for a in answers if "refused" in a}
    print(
        f"failover: {new_master} promoted {failover_s:.1f} s after the kill, then {last_master} {second_s:.1f} s "
        f"after the kill; {len(acknowledged)} of {PUTS} puts "
        f"acknowledged, {len(refused)} refused {sorted(set(refused.values()))[:3]}"
    )
    assert len(answers) == PUTS, f"the putter exited {putter.returncode} after {len(answers)} puts"
    assert acknowledged, "no put was acknowledged: the scenario tried nothing"
    document = fleet.settle(acknowledged, SETTLE_AFTER_FAILOVER_S)
    assert not twice(document), f"second final entries: {twice(document)}"
    assert all(document["finals"][rid] == 1 for rid in acknowledged)
    assert not fleet.restarted(), f"scalers exited in the failover: {fleet.exit_reasons()}"  # nothing restarted
    after = [a["requestId"] for a in answers if "index" in a and a["at"] > killed_at]
    print(f"{len(after)} acknowledged after the kill, all ended once")
