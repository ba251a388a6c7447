"""The scaler loop with fakes: Redis is fakeredis, processes are a FakeLauncher, time is a number."""

from __future__ import annotations

import itertools
import json

import fakeredis
import pytest
import redis

from scalablejob.host.gpus import fake_gpus
from scalablejob.model import keys
from scalablejob.model.errors import ScalerError
from scalablejob.model.routing import TaskType, queue_for
from scalablejob.scaler.exporter import Exporter
from scalablejob.scaler.loop import Fleet, Parts, Scaler
from scalablejob.scaler.metrics import RedisMetrics
from scalablejob.scaler.policy import Policy
from scalablejob.scaler.records import ProcessRecord, ScalerStore
from scalablejob.scaler.testing import FAKE_HOST, FakeLauncher, FakeRecovery
from scalablejob.scaler.wakeup import Wakeup
from scalablejob.store.presence import Presence, WorkerState
from scalablejob.store.queues import priority_lists

SERVICE = "svc"
T0 = 1000.0


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def make_scaler(
    client: fakeredis.FakeRedis, launcher: FakeLauncher | None = None, *, initial: int = 0, gpus: int = 0,
    per_worker: int = 0, exporter: Exporter | None = None, **knobs: float,
) -> Scaler:  # fmt: skip
    rules: dict[str, float] = {"min": 0, "max": 10, "avg_waiting_length": 2, "scale_down_window_s": 2}
    rules.update(knobs)
    capacity = None if per_worker == 0 else gpus // per_worker
    policy = Policy(**rules, gpu_capacity=capacity)  # type: ignore[arg-type]
    parts = Parts(
        RedisMetrics(client, SERVICE), launcher or FakeLauncher(), FakeRecovery(),
        ScalerStore(client, SERVICE, FAKE_HOST), exporter,
    )  # fmt: skip
    return Scaler(Fleet(SERVICE, FAKE_HOST, fake_gpus(gpus), per_worker, initial), policy, parts)


def enqueue(client: fakeredis.FakeRedis, count: int) -> None:
    queue = priority_lists(queue_for(SERVICE, TaskType.COMMAND))[-1]
    client.lpush(queue, *[b"message"] * count)


def drain_queue(client: fakeredis.FakeRedis) -> None:
    client.delete(*priority_lists(queue_for(SERVICE, TaskType.COMMAND)))


def publish(
    client: fakeredis.FakeRedis, name: str, state: WorkerState, held: dict[str, str] | None = None,
    heartbeat: float = T0 + 1e6,
) -> None:  # fmt: skip
    presence = Presence(name, 1, FAKE_HOST, state, "", held or {}, heartbeat=heartbeat)
    client.hset(keys.worker_presence(SERVICE), name, presence.encode())


def launcher_of(scaler: Scaler) -> FakeLauncher:
    assert isinstance(scaler.parts.launcher, FakeLauncher)
    return scaler.parts.launcher


def recovery_of(scaler: Scaler) -> FakeRecovery:
    assert isinstance(scaler.parts.recovery, FakeRecovery)
    return scaler.parts.recovery


def all_ready(client: fakeredis.FakeRedis, scaler: Scaler) -> None:
    for name in launcher_of(scaler).names:
        publish(client, name, WorkerState.IDLE)


def test_a_burst_spawns_workers_at_once_up_to_max(client: fakeredis.FakeRedis) -> None:
    scaler = make_scaler(client, max=3, initial=1)
    scaler.start(T0)
    assert len(launcher_of(scaler).spawned) == 1

    enqueue(client, 7)
    decision = scaler.tick(T0 + 0.5)

    assert (decision.desired, decision.target) == (3, 3)
    assert "ceil((7 queued + 0 running) / 2) = 4, capped at 3 by max" in decision.reason
    assert len(launcher_of(scaler).spawned) == 3


def test_scale_down_stops_idle_workers_after_the_window_never_busy_ones(client: fakeredis.FakeRedis) -> None:
    scaler = make_scaler(client, initial=0)
    scaler.start(T0)
    enqueue(client, 6)
    scaler.tick(T0)
    first, second, third = launcher_of(scaler).names
    drain_queue(client)
    publish(client, first, WorkerState.BUSY, {"t1": "g1"})
    publish(client, second, WorkerState.IDLE)
    publish(client, third, WorkerState.IDLE)

    scaler.tick(T0 + 1)  # ceil(1 / 2) = 1, not yet held for the 2 s window
    assert launcher_of(scaler).stopped == []
    scaler.tick(T0 + 3)  # 1 has held for 2 s

    assert sorted(launcher_of(scaler).stopped) == sorted([second, third])
    assert first not in launcher_of(scaler).stopped


def test_a_crashed_worker_is_replaced_at_once_and_its_tasks_go_back(client: fakeredis.FakeRedis) -> None:
    scaler = make_scaler(client, min=2, initial=2)
    scaler.start(T0)
    busy, idle = launcher_of(scaler).names
    publish(client, busy, WorkerState.BUSY, {"task-1": "tag-1"})
    publish(client, idle, WorkerState.IDLE)
    scaler.tick(T0)

    launcher_of(scaler).exit(busy, -9)
    scaler.tick(T0 + 0.5)

    assert recovery_of(scaler).recovered == [(busy, {"task-1": "tag-1"})]
    assert len(launcher_of(scaler).spawned) == 3 and len(launcher_of(scaler).alive) == 2
    assert busy not in client.hkeys(keys.worker_presence(SERVICE))
    assert scaler.backoff.failures == 0  # it had been ready: a crash, not a failure to start


def test_a_crash_seen_while_the_broker_is_away_is_handled_once_it_is_back(client: fakeredis.FakeRedis) -> None:
    scaler = make_scaler(client, min=1, initial=1)
    scaler.start(T0)
    (worker,) = launcher_of(scaler).names
    publish(client, worker, WorkerState.BUSY, {"task-1": "tag-1"})
    launcher_of(scaler).exit(worker, -9)

    recovery_of(scaler).broker_down = True
    with pytest.raises(redis.ConnectionError):
        scaler.tick(T0 + 0.5)
    recovery_of(scaler).broker_down = False
    scaler.tick(T0 + 1)

    assert recovery_of(scaler).recovered == [(worker, {"task-1": "tag-1"})]


def test_a_frozen_worker_is_killed_replaced_and_its_tasks_go_back_once_it_is_dead(client: fakeredis.FakeRedis) -> None:
    # given a busy worker whose heartbeat stopped at T0 (SIGSTOP), with a stale bound of 30 s
    scaler = make_scaler(client, min=1, initial=1)
    scaler.start(T0)
    (frozen,) = launcher_of(scaler).names
    publish(client, frozen, WorkerState.BUSY, {"task-1": "tag-1"}, heartbeat=T0)
    scaler.tick(T0)  # its last record, seen at T0: silence counts on the scaler's clock from then
    scaler.tick(T0 + 29)
    assert launcher_of(scaler).killed == []

    # when the bound has passed
    scaler.tick(T0 + 30)

    # then it is killed, no longer counts, and is replaced; its task goes back only once it is reaped dead
    assert launcher_of(scaler).killed == [frozen]
    assert recovery_of(scaler).recovered == []
    scaler.tick(T0 + 30.5)
    assert recovery_of(scaler).recovered == [(frozen, {"task-1": "tag-1"})]
    assert len(launcher_of(scaler).alive) == 1 and frozen not in launcher_of(scaler).alive


def test_heartbeats_missed_while_the_broker_was_away_do_not_count(client: fakeredis.FakeRedis) -> None:
    # given a worker last heard from at T0, then a broker outage of 40 s that the scaler saw too
    scaler = make_scaler(client, min=1, initial=1)
    scaler.start(T0)
    (worker,) = launcher_of(scaler).names
    publish(client, worker, WorkerState.BUSY, {"task-1": "tag-1"}, heartbeat=T0)
    metrics = scaler.parts.metrics
    object.__setattr__(scaler.parts, "metrics", _Down())
    with pytest.raises(redis.ConnectionError):
        scaler.tick(T0 + 20)
    object.__setattr__(scaler.parts, "metrics", metrics)

    # when the broker is back at T0 + 40 and the worker has not written its next beat yet
    scaler.tick(T0 + 40)
    scaler.tick(T0 + 69)

    # then it is not killed: its silence counts from the broker's return
    assert launcher_of(scaler).killed == []
    scaler.tick(T0 + 70)
    assert launcher_of(scaler).killed == [worker]


class _Down:
    def observe(self) -> None:
        raise redis.ConnectionError("fake: the broker is away")


def test_a_worker_that_keeps_dying_at_start_is_backed_off(client: fakeredis.FakeRedis) -> None:
    launcher = FakeLauncher()
    scaler = make_scaler(client, launcher, min=1, initial=1)
    scaler.start(T0)
    spawn_times = [T0]
    now = T0
    while now < T0 + 20:
        now += 0.25
        for name in launcher.names:  # every worker dies before it is ready
            launcher.exit(name, 1)
        before = len(launcher.spawned)
        scaler.tick(now)
        spawn_times += [now] * (len(launcher.spawned) - before)

    gaps = [later - earlier for earlier, later in itertools.pairwise(spawn_times)]
    assert gaps == [1.25, 2.25, 4.25, 8.25]  # each death is seen a pass (0.25 s) later, then 1, 2, 4, 8 s pass
    scaler.tick(now + 60)  # past the backoff: a new worker, which this time becomes ready
    all_ready(client, scaler)
    scaler.tick(now + 61)
    assert scaler.backoff.failures == 0


def test_workers_are_pinned_to_their_own_gpus_and_bounded_by_them(client: fakeredis.FakeRedis) -> None:
    scaler = make_scaler(client, gpus=3, per_worker=1, max=10)
    scaler.start(T0)
    enqueue(client, 20)

    decision = scaler.tick(T0)

    assert decision.desired == 3 and "capped at 3 by the GPUs" in decision.reason
    pinned = [tuple(gpu.uuid for gpu in spec.gpus) for spec in launcher_of(scaler).spawned]
    assert pinned == [("GPU-fake-0000",), ("GPU-fake-0001",), ("GPU-fake-0002",)]
    records = ScalerStore(client, SERVICE, FAKE_HOST).records()
    assert sorted(record.gpus for record in records) == pinned


def test_a_restarted_scaler_adopts_live_workers_and_recovers_dead_ones(client: fakeredis.FakeRedis) -> None:
    store = ScalerStore(client, SERVICE, FAKE_HOST)
    store.save(ProcessRecord("svc-live@fakehost", 11, 1.0, FAKE_HOST, ("GPU-fake-0000",)))
    store.save(ProcessRecord("svc-dead@fakehost", 12, 2.0, FAKE_HOST, ("GPU-fake-0001",)))
    store.save(ProcessRecord("svc-other@elsewhere", 13, 3.0, "elsewhere"))
    publish(client, "svc-dead@fakehost", WorkerState.BUSY, {"task-9": "tag-9"})
    launcher = FakeLauncher(adoptable={"svc-live@fakehost"})
    scaler = make_scaler(client, launcher, gpus=2, per_worker=1, min=2, initial=2)

    scaler.start(T0)

    assert set(scaler.workers) == {"svc-live@fakehost", launcher.spawned[0].name}
    assert [spec.gpus[0].uuid for spec in launcher.spawned] == ["GPU-fake-0001"]  # the adopted one keeps GPU 0
    assert recovery_of(scaler).recovered == [("svc-dead@fakehost", {"task-9": "tag-9"})]
    names = {name.decode() for name in client.hkeys(keys.scaler_processes(SERVICE))}
    assert names == {"svc-live@fakehost", "svc-other@elsewhere", launcher.spawned[0].name}


def test_a_scaler_whose_lease_and_records_a_failover_lost_keeps_running_and_writes_them_again(
    client: fakeredis.FakeRedis,
) -> None:
    scaler = make_scaler(client, min=2, initial=2)
    scaler.start(T0)
    names = set(launcher_of(scaler).names)
    client.delete(keys.scaler_lease(SERVICE, FAKE_HOST), keys.scaler_processes(SERVICE))  # a replica without them

    scaler.tick(T0 + 1)

    assert set(scaler.workers) == names and not launcher_of(scaler).stopped  # nothing restarted, nothing stopped
    assert {record.name for record in ScalerStore(client, SERVICE, FAKE_HOST).records()} == names
    assert client.exists(keys.scaler_lease(SERVICE, FAKE_HOST))


def test_a_second_scaler_of_the_same_service_and_host_is_refused(client: fakeredis.FakeRedis) -> None:
    make_scaler(client).start(T0)
    with pytest.raises(ScalerError, match=r"another scaler \(pid \d+\) already runs service svc on fakehost"):
        make_scaler(client).start(T0)


def test_stopping_the_scaler_warm_stops_every_worker_busy_ones_too(client: fakeredis.FakeRedis) -> None:
    scaler = make_scaler(client, min=2, initial=2)
    scaler.start(T0)
    busy, idle = launcher_of(scaler).names
    publish(client, busy, WorkerState.BUSY, {"task-1": "tag-1"})
    scaler.tick(T0)

    scaler.drain()
    assert sorted(launcher_of(scaler).stopped) == sorted([busy, idle])
    launcher_of(scaler).exit(idle, 0)
    scaler.reap(T0 + 1)
    assert list(scaler.workers) == [busy]
    scaler.kill_all()  # a second stop request
    scaler.reap(T0 + 2)

    assert scaler.workers == {}
    assert recovery_of(scaler).recovered == [(busy, {"task-1": "tag-1"})]


def test_each_pass_publishes_its_decision_and_metrics(client: fakeredis.FakeRedis) -> None:
    exporter = Exporter(SERVICE)
    scaler = make_scaler(client, exporter=exporter, min=1, initial=1)
    scaler.start(T0)
    enqueue(client, 3)

    scaler.tick(T0)

    status = {k.decode(): v.decode() for k, v in client.hgetall(keys.scaler_status(SERVICE, FAKE_HOST)).items()}
    assert (status["desired"], status["replicas"], status["queued"]) == ("2", "1", "3")
    assert "3 queued" in status["reason"]
    assert sorted(json.loads(status["workers"]).values()) == ["starting", "starting"]
    value = exporter.registry.get_sample_value
    assert value("scalablejob_desired_replicas", {"service": SERVICE}) == 2
    assert value("scalablejob_queue_depth", {"service": SERVICE, "queue": "svc.command"}) == 3
    assert value("scalablejob_scale_decisions_total", {"service": SERVICE, "change": "up"}) == 1
    assert value("scalablejob_workers", {"service": SERVICE, "state": "starting"}) == 2


def test_a_spawn_that_fails_is_backed_off_not_fatal(client: fakeredis.FakeRedis) -> None:
    launcher = FakeLauncher(fail_spawn=True)
    scaler = make_scaler(client, launcher, min=1)
    scaler.start(T0)
    scaler.tick(T0 + 0.5)
    assert scaler.backoff.failures == 1 and scaler.workers == {}


def test_a_broker_away_at_start_delays_the_start_instead_of_ending_the_scaler() -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    scaler = make_scaler(client, min=1, initial=1)
    server.connected = False  # frozen or restarting while the scaler starts

    class BrokerBackOnTheFirstWait(Wakeup):
        """The broker answers again after the first failed start; a stop is asked once a worker runs."""

        def wait(self, timeout_s: float) -> None:
            server.connected = True
            launcher = launcher_of(scaler)
            for name in launcher.stopped:
                launcher.exit(name, 0)
            if launcher.names:
                self.stop_requests = 1

    with BrokerBackOnTheFirstWait() as wakeup:
        scaler.run(wakeup, clock=itertools.count(T0).__next__, interval_s=0)

    (started,) = launcher_of(scaler).spawned  # the initial worker, once the broker answered
    assert launcher_of(scaler).stopped == [started.name]  # and the run ended by the stop asked, warm


def test_a_start_retried_after_its_lease_was_taken_keeps_the_lease(client: fakeredis.FakeRedis) -> None:
    store = ScalerStore(client, SERVICE, FAKE_HOST)
    store.acquire_lease()  # its answer lost on the way back: the start is tried again

    store.acquire_lease()

    assert store.renew_lease() is False  # held, not taken again
