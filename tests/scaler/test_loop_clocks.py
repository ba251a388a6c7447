"""No clock is compared across hosts (issue 22): scalers on a shared (fake) Redis whose clocks disagree, or step,
judge each other and their workers only by what they see change. Each scaler's `now` is its own clock: hosts'
monotonic clocks have unrelated origins, so a 60 s offset between two `now`s is what two real hosts give."""

from __future__ import annotations

import fakeredis
from test_hosts_split import host_scaler, spawned
from test_loop import SERVICE, T0, enqueue, launcher_of, publish, recovery_of

from scalablejob.model import keys
from scalablejob.scaler.loop import Scaler
from scalablejob.scaler.membership import Membership
from scalablejob.store.presence import Presence, WorkerState

SKEW_S = 60.0


def membership_of(scaler: Scaler) -> Membership:
    membership = scaler.parts.membership
    assert membership is not None
    return membership


def leader_and_lost(client: fakeredis.FakeRedis) -> tuple[Scaler, Scaler]:
    """h1, which leads, and h2, which will be lost (capacity 4 each, max 6), both started at T0."""
    leader, lost = host_scaler(client, "h1", 4), host_scaler(client, "h2", 4)
    leader.start(T0)
    lost.start(T0)
    return leader, lost


def worker_on(client: fakeredis.FakeRedis, host: str, beat: int, held: dict[str, str], wall: float) -> str:
    """A worker of `host` (spawned by a scaler that is gone) publishing its `beat`-th record at its host's `wall`."""
    name = f"{SERVICE}-stray@{host}"
    presence = Presence(name, 1, host, WorkerState.BUSY, "", held, heartbeat=wall + beat / 1000)
    client.hset(keys.worker_presence(SERVICE), name, presence.encode())
    return name


def test_a_leader_60_s_ahead_declares_no_host_dead_and_the_follower_runs_its_share() -> None:
    # given h1 (the leader) whose clock is 60 s ahead of h2's
    client = fakeredis.FakeRedis()
    leader, follower = host_scaler(client, "h1", 3), host_scaler(client, "h2", 3)
    leader.start(T0 + SKEW_S)
    follower.start(T0)
    enqueue(client, 6)

    # when both run their passes for 20 s
    for step in range(40):
        leader.tick(T0 + SKEW_S + step / 2)
        follower.tick(T0 + step / 2)

    # then nobody was declared dead and each host runs its share of 6
    assert membership_of(leader).dead_hosts == set()
    assert [record.host for record in membership_of(leader).hosts()] == ["h1", "h2"]
    assert (spawned(leader), spawned(follower)) == (3, 3)


def test_a_follower_30_s_ahead_still_sees_the_leaders_plan_as_current() -> None:
    # given h2 (a follower) whose clock is 30 s ahead of the leader's
    client = fakeredis.FakeRedis()
    leader, follower = host_scaler(client, "h1", 3), host_scaler(client, "h2", 3)
    leader.start(T0)
    follower.start(T0 + 30)
    enqueue(client, 6)

    # when both run a few passes
    for step in range(4):
        leader.tick(T0 + step / 2)
        decision = follower.tick(T0 + 30 + step / 2)

    # then the follower keeps its share instead of holding for want of a current plan
    assert "holding" not in decision.reason
    assert spawned(follower) == 3


def test_a_host_clock_stepped_back_30_s_does_not_make_its_scaler_kill_its_busy_worker() -> None:
    # given a busy worker that writes its heartbeat every 2 s from the host's wall clock
    client = fakeredis.FakeRedis()
    scaler = host_scaler(client, "h1", 2)
    scaler.start(T0)
    enqueue(client, 1)
    scaler.tick(T0)
    (worker,) = launcher_of(scaler).names
    wall = T0
    # when the host's wall clock steps back 31 s at T0 + 40 (the scaler's pass clock runs on)
    for step in range(1, 121):
        now = T0 + step / 2
        if step % 4 == 0:
            wall = now - (31 if now > T0 + 40 else 0)
            publish(client, worker, WorkerState.BUSY, {"task-1": "tag-1"}, heartbeat=wall)
        scaler.tick(now)

    # then the worker, whose record kept changing, is not killed
    assert launcher_of(scaler).killed == []


def test_the_busy_workers_of_a_host_declared_dead_are_not_orphans_and_count_against_max() -> None:
    # given h1 and h2 (capacity 4 each, max 6), h2 running two busy workers
    client = fakeredis.FakeRedis()
    leader, lost = leader_and_lost(client)
    enqueue(client, 12)
    leader.tick(T0 + 0.5)
    lost.tick(T0 + 0.5)

    # when h2's scaler dies (its record stops changing) while its two workers live on and keep writing
    for step in range(2, 40):
        now = T0 + step / 2
        worker_on(client, "h2", step, {"task-a": "tag-a"}, wall=now + 1000)  # h2's clock is far ahead too
        worker_on(client, "h3", step, {}, wall=now)  # not a host of the service at all: counted as well
        leader.tick(now)

    # then h2 is declared dead, but the tasks its live workers hold are never called orphaned ...
    assert "h2" in membership_of(leader).dead_hosts
    orphaned = [task for call in recovery_of(leader).orphaned for task in call]
    assert "task-a" not in orphaned
    # ... and its workers still count: h1 gets 6 minus the 2 workers without a scaler
    assert spawned(leader) == 4


def test_a_silent_worker_of_a_dead_host_is_an_orphan_and_the_reason_says_why() -> None:
    client = fakeredis.FakeRedis()
    leader, lost = leader_and_lost(client)
    leader.tick(T0 + 0.5)
    lost.tick(T0 + 0.5)
    name = worker_on(client, "h2", 1, {"task-b": "tag-b"}, wall=T0)

    for step in range(2, 40):  # h2 and its worker silent from now on
        leader.tick(T0 + step / 2)

    reasons = {task: why for call in recovery_of(leader).orphaned for task, why in call.items()}
    assert "task-b" in reasons
    assert name in reasons["task-b"] and "h2" in reasons["task-b"]


def test_a_dead_hosts_worker_that_falls_silent_after_its_host_has_its_tasks_go_back_once_silent_for_the_bound() -> None:
    # given h2, whose scaler stops writing at T0 + 0.5 while its worker writes on until T0 + 2
    client = fakeredis.FakeRedis()
    leader, lost = leader_and_lost(client)
    lost.tick(T0 + 0.5)
    last_write = T0 + 2.0
    bound = leader.fleet.host_stale_after_s

    # when the leader runs its passes, every 0.25 s, until well after both fell silent
    orphaned_at = None
    for step in range(2, 4 * 20):
        now = T0 + step / 4
        if now <= last_write:
            worker_on(client, "h2", step, {"task-c": "tag-c"}, wall=now)
        leader.tick(now)
        if orphaned_at is None and any("task-c" in call for call in recovery_of(leader).orphaned):
            orphaned_at, reconciles_then = now, len(recovery_of(leader).reconciled)
        if abs(now - (last_write + bound - 0.25)) < 1e-9:
            assert "h2" in membership_of(leader).dead_hosts  # the host first, its worker not yet silent for long

    # then the worker's task went back at its first pass after the bound, not a reconcile period (3 s) later
    assert orphaned_at is not None, "task-c was never orphaned"
    assert orphaned_at == last_write + bound, f"orphaned {orphaned_at - last_write} s after its worker's last write"
    # and its record, still there, brings no reconcile at every pass: one every 3 s over the last 7.75 s
    assert len(recovery_of(leader).reconciled) - reconciles_then == 2
