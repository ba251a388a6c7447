"""A worker records the message of a task it took in the task's start (issue 26): a short query costs Redis three
script calls, the put, the start (with the message's unacknowledged record) and the finish (with its ack), where a
fourth recorded the message on receipt; and every message ends acknowledged."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from conftest import service_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TASKS = 30


def test_a_short_query_costs_three_script_calls_and_leaves_nothing_unacknowledged(
    start_worker: Any, client_for: Any, redis_client: redis.Redis
) -> None:
    # given a worker that answered one query
    start_worker(service_config("recordstart", **{"rpc.worker_threads": 1}))
    client = client_for("recordstart")
    client.result(client.put(b"{}", {"taskType": "query"})[1], timeout=30)
    redis_client.config_resetstat()

    # when queries are drained
    ids = [client.put(b"{}", {"taskType": "query"})[1] for _ in range(TASKS)]
    answers = [client.result(request_id, timeout=30) for request_id in ids]

    # then each took three script calls (and one for the client's read of its result), and no message is left
    # unacknowledged
    stats: Any = redis_client.info("commandstats")
    scripts = sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))
    assert len(answers) == TASKS
    assert TASKS * 4 <= scripts <= TASKS * 4 + 3, stats  # + a few for what the worker does once a second
    assert redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0
