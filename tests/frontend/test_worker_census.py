"""The front end's live-worker count: judged by seeing each presence record change on its own clock, never by
comparing a worker host's heartbeat (its wall time) with the front end's (issue 22)."""

from __future__ import annotations

import asyncio

import fakeredis

from scalablejob.frontend.status import WorkerCensus
from scalablejob.model import keys
from scalablejob.store.presence import STALE_AFTER_S, Presence, WorkerState

SERVICE = "svc"
AN_HOUR_S = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def publish(client: fakeredis.FakeAsyncRedis, name: str, seq: int, heartbeat: float) -> None:
    record = Presence(name, 1, "h", WorkerState.IDLE, heartbeat=heartbeat, seq=seq).encode()
    asyncio.run(client.hset(keys.worker_presence(SERVICE), name, record))


def test_a_worker_whose_host_clock_is_an_hour_off_counts_while_its_record_changes() -> None:
    client = fakeredis.FakeAsyncRedis()
    clock = Clock()
    census = WorkerCensus(client, SERVICE, clock)
    publish(client, "behind@h2", seq=1, heartbeat=-AN_HOUR_S)
    publish(client, "ahead@h3", seq=1, heartbeat=10 * AN_HOUR_S)
    assert asyncio.run(census.count()) == 2
    for seq in range(2, 5):  # the workers write on: each record changes between the front end's reads
        clock.now += STALE_AFTER_S / 2
        publish(client, "behind@h2", seq=seq, heartbeat=-AN_HOUR_S + seq)
        publish(client, "ahead@h3", seq=seq, heartbeat=10 * AN_HOUR_S + seq)
        assert asyncio.run(census.count()) == 2


def test_a_worker_whose_record_stops_changing_stops_counting_after_the_bound() -> None:
    client = fakeredis.FakeAsyncRedis()
    clock = Clock()
    census = WorkerCensus(client, SERVICE, clock)
    publish(client, "frozen@h1", seq=7, heartbeat=clock.now)  # a heartbeat of "now" on the front end's clock
    assert asyncio.run(census.count()) == 1
    clock.now += STALE_AFTER_S - 0.1
    assert asyncio.run(census.count()) == 1
    clock.now += 0.2
    assert asyncio.run(census.count()) == 0
