"""What a short task costs Redis on a real worker (issue 26): one BRPOP, as plain Celery's, since a BRPOP that would
leave a full type's queue out is held back until the slot frees (workers/wake.py), so no CLIENT UNBLOCK; and three
script calls, the put, the start (which records the message as unacknowledged) and the finish (which acknowledges
it), where a fourth recorded the message on receipt. Every message ends acknowledged. The dashboard's counters and
timings are written a few times a second by the worker (workers/activity.py), not by each start and finish."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from conftest import service_config, wait_until
from scalablejob.model import keys
from scalablejob.model.history import split_timings
from scalablejob.workers.activity import FLUSH_S

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TASKS = 40


@pytest.fixture
def drained(start_worker: Any, client_for: Any, redis_client: redis.Redis) -> dict[str, Any]:
    """Redis' command counts over a drain of TASKS short queries by a worker with one query slot (its command slot
    free, so a running query leaves the query queue out), after one query warmed it up."""
    start_worker(service_config("roundtrips", **{"rpc.worker_threads": 1}))
    client = client_for("roundtrips")
    client.result(client.put(b"{}", {"taskType": "query"})[1], timeout=30)
    redis_client.config_resetstat()
    began = time.monotonic()
    ids = [client.put(b"{}", {"taskType": "query"})[1] for _ in range(TASKS)]
    for request_id in ids:
        client.result(request_id, timeout=30)
    stats: Any = redis_client.info("commandstats")
    return {
        "seconds": time.monotonic() - began,
        **{name.removeprefix("cmdstat_"): row["calls"] for name, row in stats.items()},
    }


def test_a_short_querys_slot_frees_without_a_gated_brpop_to_unblock(drained: dict[str, Any]) -> None:
    unblocks = drained.get("client|unblock", drained.get("client", 0))
    assert unblocks <= TASKS // 4, drained  # (most) slots freed while the BRPOP was held back
    assert drained.get("brpop", 0) <= TASKS * 1.5, drained  # about one per task


def test_a_short_query_costs_three_script_calls_and_leaves_nothing_unacknowledged(
    drained: dict[str, Any], redis_client: redis.Redis
) -> None:
    scripts = drained.get("evalsha", 0) + drained.get("eval", 0)
    # and one for the client's read of each result; a few for what the worker does once a second
    assert TASKS * 4 <= scripts <= TASKS * 4 + 3, drained
    assert redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0


def test_the_dashboards_counts_are_written_in_batches_and_count_every_task(
    drained: dict[str, Any], redis_client: redis.Redis
) -> None:
    # a start and a finish each counted itself and pushed its time: four commands per task on its path; now each put
    # pushes its message, and each flush (one every FLUSH_S, while the drain lasted) counts and pushes the times
    flushes = drained["seconds"] / FLUSH_S + 2
    assert drained.get("hincrby", 0) + drained.get("lpush", 0) <= TASKS + 3 * flushes, drained

    # and every task shows on the dashboard once its worker flushed: the warm-up's and the drain's
    def counted() -> bool:
        started, finished = redis_client.hmget(keys.activity_counts("roundtrips"), ["started", "finished"])
        return int(started or 0) == int(finished or 0) == TASKS + 1

    wait_until(counted, 10, "the worker's activity counts")
    waits, runs = split_timings(redis_client.lrange(keys.activity_timings("roundtrips"), 0, -1))
    assert len(waits) == len(runs) == TASKS + 1
    assert all(0 <= seconds < 30 for seconds in waits + runs), (waits, runs)
