"""A shared pool (the Kubernetes pods, `Fleet.shared`) with fakes: the scaler replicas share one set of workers, only
the leader acts on them, it adopts them when it takes the lead, and it leaves them running when it stops."""

from __future__ import annotations

import fakeredis
import pytest

from scalablejob.model import keys
from scalablejob.model.errors import KubernetesError
from scalablejob.model.routing import TaskType, queue_for
from scalablejob.scaler.loop import Fleet, Parts, Scaler
from scalablejob.scaler.membership import Membership
from scalablejob.scaler.metrics import RedisMetrics
from scalablejob.scaler.policy import Policy
from scalablejob.scaler.records import ProcessRecord, ScalerStore
from scalablejob.scaler.testing import FakeLauncher, FakeRecovery
from scalablejob.store.queues import priority_lists

SERVICE = "svc"
T0 = 1000.0


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def replica(client: fakeredis.FakeRedis, host: str, launcher: FakeLauncher | None = None, initial: int = 0) -> Scaler:
    policy = Policy(min=0, max=4, avg_waiting_length=1, scale_down_window_s=2)
    parts = Parts(
        RedisMetrics(client, SERVICE), launcher or FakeLauncher(host=host), FakeRecovery(),
        ScalerStore(client, SERVICE, host), membership=Membership(client, SERVICE, host, 4),
    )  # fmt: skip
    fleet = Fleet(SERVICE, host, (), 0, initial, shared=True, worker_names=lambda token: f"pod-{token}@ns")
    return Scaler(fleet, policy, parts)


def fake(scaler: Scaler) -> FakeLauncher:
    assert isinstance(scaler.parts.launcher, FakeLauncher)
    return scaler.parts.launcher


def enqueue(client: fakeredis.FakeRedis, count: int) -> None:
    client.lpush(priority_lists(queue_for(SERVICE, TaskType.COMMAND))[-1], *[b"message"] * count)


def test_only_the_leader_starts_workers_and_the_other_replica_stands_by(client: fakeredis.FakeRedis) -> None:
    # given two replicas of the scaler of one shared pool, the first one started first
    first, second = replica(client, "a", initial=1), replica(client, "b", initial=1)
    first.start(T0)
    second.start(T0)

    # when 3 tasks are queued and both make a pass
    enqueue(client, 3)
    first.tick(T0 + 0.25)
    decision = second.tick(T0 + 0.25)

    # then the leader started the workers (names from the fleet's namer) and the other one acts on nothing
    assert len(fake(first).spawned) == 3
    assert all(spec.name.startswith("pod-") and spec.name.endswith("@ns") for spec in fake(first).spawned)
    assert fake(second).spawned == [] and second.workers == {}
    assert decision.reason.startswith("standby")
    assert client.hget(keys.scaler_status(SERVICE, "b"), "reason").decode().startswith("standby")


def test_a_replica_that_takes_the_lead_adopts_the_pool_before_counting_it(client: fakeredis.FakeRedis) -> None:
    # given a leader with 2 workers, and a standby replica whose backend lists the same 2
    leader = replica(client, "a", initial=2)
    leader.start(T0)
    pods = dict(fake(leader).alive)
    shared = FakeLauncher(host="b", alive=dict(pods), adoptable=set(pods), listable=set(pods))
    standby = replica(client, "b", shared)
    standby.start(T0)
    enqueue(client, 2)
    standby.tick(T0 + 0.25)
    assert standby.workers == {}

    # when the leader stops (its lease goes with it) and the standby makes a pass
    leader.drain()
    leader.close()
    standby.tick(T0 + 0.5)

    # then the standby leads the same 2 workers and started none: the pool was never above 2
    assert set(standby.workers) == set(pods)
    assert shared.spawned == []


def test_stopping_a_replica_leaves_the_pool_running_for_the_next_leader(client: fakeredis.FakeRedis) -> None:
    # given a leader with 2 workers
    leader = replica(client, "a", initial=2)
    leader.start(T0)
    names = list(leader.workers)

    # when it is stopped (a rolling update, a node drain)
    leader.drain()

    # then no worker was stopped or killed: each was let go, untouched
    assert fake(leader).stopped == [] and fake(leader).killed == []
    assert sorted(fake(leader).let_gone) == sorted(names)
    assert leader.workers == {}


def test_a_leader_that_lost_the_lease_lets_its_workers_go_untouched(client: fakeredis.FakeRedis) -> None:
    # given a leader with 2 workers
    leader = replica(client, "a", initial=2)
    leader.start(T0)
    names = list(leader.workers)

    # when another replica holds the leader lease (this one was paused past its TTL) and it makes a pass
    client.set(keys.scaler_leader(SERVICE), "b:other", px=5000)
    enqueue(client, 4)
    leader.tick(T0 + 0.25)

    # then it lets its workers go, stops none and starts none
    assert leader.workers == {}
    assert sorted(fake(leader).let_gone) == sorted(names)
    assert fake(leader).stopped == [] and len(fake(leader).spawned) == 2


def test_a_pod_that_died_while_no_scaler_led_has_its_tasks_put_back_by_the_next_leader(
    client: fakeredis.FakeRedis,
) -> None:
    # given a record of a pod this replica started before it restarted, that no longer exists
    ScalerStore(client, SERVICE, "a").save(ProcessRecord("pod-dead@ns", 0, 0.0, "a"))
    presence = '{"pid": 1, "host": "x", "state": "busy", "held": {"task-1": "tag-1"}, "heartbeat": 0, "seq": 1}'
    client.hset(keys.worker_presence(SERVICE), "pod-dead@ns", presence)

    # when the replica starts and leads
    scaler = replica(client, "a")
    scaler.start(T0)

    # then its task is put back and it is forgotten
    assert scaler.parts.recovery.recovered == [("pod-dead@ns", {"task-1": "tag-1"})]  # type: ignore[attr-defined]
    assert "pod-dead@ns" not in scaler.workers


def test_an_adoption_the_api_server_refused_is_made_again_before_any_worker_is_started(
    client: fakeredis.FakeRedis,
) -> None:
    # given a leader with 2 workers, and a standby whose backend lists them but refuses its first list
    leader = replica(client, "a", initial=2)
    leader.start(T0)
    pods = dict(fake(leader).alive)
    shared = FakeLauncher(host="b", alive=dict(pods), adoptable=set(pods), listable=set(pods), fail_list=1)
    standby = replica(client, "b", shared)
    standby.start(T0)
    enqueue(client, 2)
    leader.drain()
    leader.close()

    # when it takes the lead, its first list is refused (the pass is skipped), and it makes another pass
    with pytest.raises(KubernetesError):
        standby.tick(T0 + 0.25)
    standby.tick(T0 + 0.5)

    # then it adopted the 2 workers then, and started none
    assert set(standby.workers) == set(pods)
    assert shared.spawned == []
