"""What `search` costs the other clients of Redis on a long sink and a long queue.

`search(index)` counts the entries before an item of the output queue, and finds a queued request's position in
its Celery queue. Both walk the structure in bounded script steps (positions.STEP per call). Here, on a sink of
ENTRIES entries and a Celery queue of ENTRIES messages, while another client PINGs Redis in a loop: the longest
PING, the longest script call (Redis' own SLOWLOG, so no client-side noise), and the time the search took; for the
bounded walk and, in the same run, the same scripts allowed to walk everything in one call (what the front end did
before); and the longest PING with no search at all, as the baseline. Medians over RUNS runs.
Run: python bench/search_scan.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable

import redis
from filtered_reads import longest_ping_during  # bench/ is this script's folder
from redis import asyncio as aioredis

from scalablejob.frontend.positions import STEP, Positions
from scalablejob.local.redis_server import RedisServer
from scalablejob.store.sink import encode_tags

RUNS = 3
ENTRIES = 300_000
STREAM = "bench/sink"
QUEUE = "bench.query"
EVERYTHING = 10**9
_FILL_STREAM = """
local log = ARGV[3]
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  redis.call('XADD', KEYS[1], i .. '-0', 'data', 'epoch 1 loss 0.5', 'tags', log)
end
"""
_FILL_QUEUE = """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  redis.call('LPUSH', KEYS[1], '{"body": "e30=", "headers": {"id": "r-' .. i .. '", "task": "scalablejob.query"}}')
end
"""


def fill(client: redis.Redis) -> None:
    """A sink of ENTRIES log entries and a queue of ENTRIES messages, in scripts of 50k writes each."""
    log = encode_tags({"requestId": "r", "taskType": "command", "type": "log"})
    for start in range(1, ENTRIES + 1, 50_000):
        end = min(start + 49_999, ENTRIES)
        client.eval(_FILL_STREAM, 1, STREAM, start, end, log)
        client.eval(_FILL_QUEUE, 1, QUEUE, start, end)


def measured(url: str, work: Callable[[], None]) -> tuple[float, float, float, float]:
    """(longest PING of another client, longest script call, 99th percentile of the script calls, time `work` took),
    all in ms. On a busy machine the longest call also counts the time the OS kept Redis off the CPU; the 99th
    percentile shows what the calls themselves cost."""
    admin = redis.Redis.from_url(url)
    admin.config_set("slowlog-log-slower-than", 0)
    admin.config_set("slowlog-max-len", 100_000)
    admin.slowlog_reset()
    ping, took = longest_ping_during(url, work)
    scripts = sorted(e["duration"] / 1000 for e in admin.slowlog_get(100_000) if b"EVAL" in e["command"].upper())
    admin.config_set("slowlog-log-slower-than", 10_000)
    admin.close()
    p99 = scripts[int(len(scripts) * 0.99)] if scripts else 0.0
    return ping, max(scripts, default=0.0), p99, took


def idle(seconds: float) -> Callable[[], None]:
    return lambda: time.sleep(seconds)


def search(url: str, step: int) -> Callable[[], None]:
    """Both walks of one search at their worst: the sink's middle item, and the request that goes last."""

    async def run() -> None:
        client = aioredis.Redis.from_url(url)
        positions = Positions(client, step)
        assert await positions.entries_before(STREAM, ENTRIES // 2) == ENTRIES // 2 - 1
        assert await positions.ahead_of([QUEUE], f"r-{ENTRIES}") == ENTRIES - 1
        await client.aclose()

    return lambda: asyncio.run(run())


def main() -> None:
    results: dict[str, list[tuple[float, float, float, float]]] = {"no search": [], "bounded": [], "one call": []}
    with tempfile.TemporaryDirectory() as folder, RedisServer(folder, persistent=False) as server:
        client = redis.Redis.from_url(server.url)
        fill(client)
        client.close()
        for _ in range(RUNS):
            bounded = measured(server.url, search(server.url, STEP))
            results["bounded"].append(bounded)
            results["no search"].append(measured(server.url, idle(bounded[3] / 1000)))
            results["one call"].append(measured(server.url, search(server.url, EVERYTHING)))
    print(f"search on a {ENTRIES}-entry sink (its middle item) and a {ENTRIES}-message queue (its last request), "
          f"medians of {RUNS} runs")  # fmt: skip
    medians = {name: [statistics.median(run[i] for run in runs) for i in range(4)] for name, runs in results.items()}
    for name, (ping, script, p99, took) in medians.items():
        print(f"  {name:10} longest PING {ping:8.2f} ms   script calls: longest {script:8.2f} ms, p99 {p99:8.2f} ms   "
              f"search took {took:8.1f} ms")  # fmt: skip
    baseline, bounded, whole = medians["no search"], medians["bounded"], medians["one call"]
    print(f"  longest PING, bounded / no search: {bounded[0] / baseline[0]:.2f}")
    print(f"  longest PING, bounded / one call: {bounded[0] / whole[0]:.3f}")
    print(f"  longest script, bounded / one call: {bounded[1] / whole[1]:.3f}")
    print(f"  search time, bounded / one call: {bounded[3] / whole[3]:.2f}")


if __name__ == "__main__":
    main()
