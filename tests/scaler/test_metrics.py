"""What the scaler observes: queue depth over every priority list, tasks held by live workers, claimed tasks."""

from __future__ import annotations

import fakeredis

from scalablejob.model import keys
from scalablejob.scaler.metrics import RedisMetrics
from scalablejob.store.presence import STALE_AFTER_S, Presence, WorkerState
from scalablejob.store.queues import priority_lists

NOW = 1000.0


def test_observe_reads_every_queue_and_every_worker() -> None:
    client = fakeredis.FakeRedis()
    urgent, normal = priority_lists("svc.command")
    client.lpush(urgent, b"m1")
    client.lpush(normal, b"m2", b"m3")
    client.lpush(priority_lists("svc.query")[-1], b"m4")
    workers = {
        "fresh@h": Presence("fresh@h", 1, "h", WorkerState.BUSY, "", {"a": "ta", "b": "tb"}, NOW - 1),
        "stale@h": Presence("stale@h", 2, "h", WorkerState.BUSY, "", {"c": "tc"}, NOW - STALE_AFTER_S - 1),
        "gone@h": Presence("gone@h", 3, "h", WorkerState.BUSY, "", {"d": "td"}, NOW - 3600),
    }
    client.hset(keys.worker_presence("svc"), mapping={name: p.encode() for name, p in workers.items()})

    observation = RedisMetrics(client, "svc").observe()

    assert dict(observation.queued) == {"svc.command": 3, "svc.query": 1}
    assert observation.total_queued == 4
    assert observation.workers == workers
    assert observation.running({"fresh@h"}) == 2  # a worker not seen changing lately is gone: its tasks are not running
