"""Worker presence: what a worker publishes about itself for the scaler, driven as Celery's signals would. A task's
receipt and end are published soon after, by the heartbeat thread, not on the task's own path."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import wait_until
from scalablejob.store.presence import Presence, WorkerState, read_presence
from scalablejob.workers.presence import PresenceReporter


@dataclass
class FakeClock:
    """A clock that moves only when told to: the reporter takes its clock as a parameter."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def reporter(client: redis.Redis, clock: FakeClock, publish_gap_s: float = 0.01) -> PresenceReporter:
    return PresenceReporter(
        client, "svc", clock=clock, gpus="GPU-fake-0001", heartbeat_s=3600, publish_gap_s=publish_gap_s
    )


def published(client: redis.Redis, check, what: str) -> Presence:
    """The worker's record once it satisfies `check` (changes to held tasks are published soon, not at once)."""
    return wait_until(
        lambda: (record := read_presence(client, "svc").get("svc-a@host")) is not None and check(record) and record,
        5, f"the worker never published {what}",
    )  # fmt: skip


def test_a_worker_publishes_its_life_from_starting_to_gone(client: fakeredis.FakeRedis) -> None:
    clock = FakeClock()
    worker = reporter(client, clock)

    worker.starting("svc-a@host")
    assert read_presence(client, "svc")["svc-a@host"] == Presence(
        "svc-a@host", os.getpid(), socket.gethostname(), WorkerState.STARTING, "GPU-fake-0001", {}, clock.now, seq=1
    )
    worker.ready()
    idle = read_presence(client, "svc")["svc-a@host"]
    assert idle.state is WorkerState.IDLE
    assert idle.seq == 2 and idle.heartbeat == clock.now  # a new sequence number at every write: readers see it change
    worker.received("task-1", "tag-1")
    clock.advance(1)
    worker.received("task-2", "tag-2")
    busy = published(client, lambda record: len(record.held) == 2, "both tasks")
    assert (busy.state, dict(busy.held), busy.heartbeat) == (
        WorkerState.BUSY,
        {"task-1": "tag-1", "task-2": "tag-2"},
        clock.now,
    )
    worker.finished("task-1")
    worker.finished("task-2")
    idle = published(client, lambda record: not record.held, "the end of both tasks")
    assert idle.state is WorkerState.IDLE
    worker.stop_requested()
    worker.finished("unknown")
    published(client, lambda record: record.state is WorkerState.STOPPING, "that it stops")
    worker.gone()
    assert read_presence(client, "svc") == {}


def test_changes_made_in_a_burst_are_published_together(client: fakeredis.FakeRedis) -> None:
    worker = reporter(client, FakeClock(), publish_gap_s=0.5)
    worker.starting("svc-a@host")
    worker.ready()
    writes = []
    client.hset = lambda *args, hset=client.hset: writes.append(args) or hset(*args)  # type: ignore[method-assign]
    for n in range(100):
        worker.received(f"t{n}", f"g{n}")
    published(client, lambda record: len(record.held) == 100, "the burst")
    assert len(writes) <= 3  # one for the first change, one for the rest (plus one if the thread was mid-write)


def test_a_broker_outage_never_takes_the_worker_down() -> None:
    broken = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.1, retry=Retry(NoBackoff(), 0))
    worker = reporter(broken, FakeClock())
    worker.starting("svc-a@host")
    worker.received("task-1", "tag-1")
    assert worker.presence.held == {"task-1": "tag-1"}
    worker.gone()


def test_tasks_received_and_finished_on_many_threads_are_all_accounted_for(client: fakeredis.FakeRedis) -> None:
    worker = reporter(client, FakeClock())
    worker.starting("svc-a@host")
    worker.ready()

    def churn(thread: int) -> None:
        for n in range(50):
            worker.received(f"t{thread}-{n}", f"g{thread}-{n}")
            if n % 2:
                worker.finished(f"t{thread}-{n}")

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    expected = {f"t{i}-{n}" for i in range(8) for n in range(0, 50, 2)}
    published(client, lambda record: set(record.held) == expected, "every task still held")
    assert set(worker.presence.held) == expected
    worker.gone()
