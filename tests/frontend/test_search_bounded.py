"""`search` walks streams and Celery queues in bounded script steps: exact answers, and Redis stays responsive for
its other clients during a search or a filtered read of a 300k-entry output queue."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time

import httpx
import pytest
import redis
from redis import asyncio as aioredis

from conftest import service_config
from scalablejob.frontend.positions import Positions
from scalablejob.model import keys
from scalablejob.store.sink import encode_tags

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SERVICE = "big"
BIG = 300_000
PING_LIMIT_MS = 10.0
_FILL = """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  redis.call('XADD', KEYS[1], i .. '-0', 'data', 'epoch 1 loss 0.5', 'tags', ARGV[3])
end
"""
# Another client of Redis, in a process of its own (no GIL shared with the front end's thread): PINGs until told
# to stop, then prints every PING's time in ms.
_PINGER = """
import json, os, select, sys, time, redis
client = redis.Redis.from_url(os.environ["PINGER_REDIS"]); client.ping(); times = []
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    started = time.perf_counter(); client.ping(); times.append((time.perf_counter() - started) * 1000)
print(json.dumps(times), flush=True)
"""


def run(coroutine_factory):
    return asyncio.run(coroutine_factory())


async def _positions(url: str, step: int, work):
    client = aioredis.Redis.from_url(url)
    try:
        return await work(Positions(client, step))
    finally:
        await client.aclose()


def test_entries_before_an_item_are_counted_exactly_from_either_end(redis_url, redis_client):
    # given a stream of 200 entries with a random third deleted
    for index in range(1, 201):
        redis_client.xadd("s", {"data": b"x", "tags": "{}"}, id=f"{index}-0")
    rng = random.Random(14)
    gone = set(rng.sample(range(1, 201), 66))
    redis_client.xdel("s", *[f"{index}-0" for index in gone])
    kept = sorted(set(range(1, 201)) - gone)

    # when entries before several items are counted in steps of 7, then each count is the true one
    probes = [kept[0], kept[1], kept[len(kept) // 2], kept[-2], kept[-1], 500]
    counted = run(
        lambda: _positions(redis_url, 7, lambda p: asyncio.gather(*[p.entries_before("s", i) for i in probes]))
    )
    assert counted == [sum(1 for k in kept if k < index) for index in probes]
    assert run(lambda: _positions(redis_url, 7, lambda p: p.entries_before("no-such-stream", 3))) == 0


def test_a_requests_place_in_its_celery_queue_is_found_across_lists_in_steps(redis_url, redis_client):
    # given two lists (urgent first), kombu style: pushed on the left, taken from the right
    def message(request_id: str) -> str:
        return json.dumps({"body": "e30=", "headers": {"id": request_id}})

    urgent = [f"u{n}" for n in range(30)]
    normal = [f"n{n}" for n in range(50)]
    for key, ids in (("q-urgent", urgent), ("q-normal", normal)):
        redis_client.lpush(key, *[message(request_id) for request_id in ids])

    # when each request is looked for in steps of 4, then its place is how many go before it
    def place(request_id: str):
        return run(lambda: _positions(redis_url, 4, lambda p: p.ahead_of(["q-urgent", "q-normal"], request_id)))

    assert [place(r) for r in ("u0", "u29", "n0", "n49", "n1")] == [0, 29, 30, 79, 31]
    assert place("n4") == 34 and place("gone") is None and place("n") is None  # "n" is no whole id


def _fill(redis_client: redis.Redis, stream: str) -> None:
    log = encode_tags({"requestId": "r", "taskType": "command", "type": "log"})
    for start in range(1, BIG + 1, 50_000):
        redis_client.eval(_FILL, 1, stream, start, min(start + 49_999, BIG), log)
    redis_client.xadd(stream, {"data": b"done", "tags": encode_tags({"requestId": "r", "type": "result"})},
                      id=f"{BIG + 1}-0")  # fmt: skip


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99)] if ordered else 0.0


def _script_ms(redis_client: redis.Redis) -> list[float]:
    """How long each script call took inside Redis (its SLOWLOG, which logs every call here)."""
    return [e["duration"] / 1000 for e in redis_client.slowlog_get(100_000) if b"EVAL" in e["command"].upper()]


def _search_and_read(served, redis_url: str, redis_client: redis.Redis) -> tuple[float, float, str]:
    """A search of the sink's middle item and a filtered read of its last one, while another client PINGs:
    (p99 of the PINGs, p99 of the script calls, what was seen), all in ms."""
    redis_client.slowlog_reset()
    pinger = subprocess.Popen([sys.executable, "-c", _PINGER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PINGER_REDIS": redis_url})  # fmt: skip
    try:
        assert pinger.stdout.readline().strip() == "ready"
        with httpx.Client(base_url=served.url, headers={"Authorization": served.token()}, timeout=60) as http:
            started = time.monotonic()
            found = http.get(f"/api/predict/{SERVICE}/sink", params={"_search_": "true", "_index_": str(BIG // 2)})
            filtered = http.get(f"/api/predict/{SERVICE}/sink", params={"type": "result", "_length_": "1"})
            took = time.monotonic() - started
    finally:
        pinger.stdin.write("stop\n")
        pinger.stdin.close()
        pings = json.loads(pinger.stdout.readline())
        pinger.wait(10)
    assert found.status_code == 200 and found.json()["position"] == BIG // 2 - 1
    assert filtered.status_code == 200 and filtered.headers["content-type"] == "application/vnd.google.protobuf"
    scripts = _script_ms(redis_client)
    seen = (
        f"search + filtered read {took:.2f} s; {len(scripts)} script calls, p99 {_p99(scripts):.2f} ms, longest "
        f"{max(scripts):.2f} ms; {len(pings)} PINGs, p99 {_p99(pings):.2f} ms, longest {max(pings):.2f} ms"
    )
    return _p99(pings), _p99(scripts), seen


def test_a_search_and_a_filtered_read_of_a_300k_entry_sink_keep_redis_responsive(serve, redis_url, redis_client):
    # given a front end whose output queue holds 300k log entries and one result at the end
    served = serve(service_config(SERVICE))
    _fill(redis_client, keys.frontend_sink_stream(SERVICE, SERVICE))
    redis_client.config_set("slowlog-log-slower-than", 0)
    redis_client.config_set("slowlog-max-len", 100_000)

    # when a client searches its middle item and reads the result through a filter, while another client PINGs
    # (the 99th percentiles, and one more try: on a busy machine a single sample also counts the time the OS kept
    # Redis or the pinger off the CPU; a script that really held Redis shows in every try)
    attempts = [_search_and_read(served, redis_url, redis_client)]
    if max(attempts[0][:2]) >= PING_LIMIT_MS:
        attempts.append(_search_and_read(served, redis_url, redis_client))
    print("\n".join(seen for _, _, seen in attempts))

    # then the other client's PINGs stayed under the limit, and so did every script call
    ping_p99, script_p99, seen = attempts[-1]
    assert ping_p99 < PING_LIMIT_MS and script_p99 < PING_LIMIT_MS, seen
