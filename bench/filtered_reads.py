"""What a tag-filtered read of a long output queue costs the other clients of Redis.

A sink of ENTRIES entries (log lines, with one `type=result` entry at the end) is read with the filter
`type=result`, as `get(tags=...)` and `watch(tags=...)` do, while another client PINGs Redis in a loop. Measured:
the longest PING and the time the read took, for the bounded scan (tag_scan.MAX_STEPS items per script call)
and, as the baseline in the same run, the same script allowed to scan the whole stream in one call (what the
front end did before). Medians over RUNS runs. Run: python bench/filtered_reads.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import redis
from redis import asyncio as aioredis

from scalablejob.frontend.tag_scan import MAX_STEPS, TagScan
from scalablejob.local.redis_server import RedisServer
from scalablejob.store.sink import encode_tags

RUNS = 3
ENTRIES = 300_000
STREAM = "bench/sink"
WHOLE_STREAM = 10**9


def fill(url: str) -> None:
    client = redis.Redis.from_url(url)
    log = encode_tags({"requestId": "r", "taskType": "command", "type": "log"})
    for start in range(1, ENTRIES, 10_000):
        pipe = client.pipeline(transaction=False)
        for index in range(start, min(start + 10_000, ENTRIES)):
            pipe.xadd(STREAM, {"data": b"epoch 1 loss 0.5", "tags": log}, id=f"{index}-0")
        pipe.execute()
    client.xadd(STREAM, {"data": b"done", "tags": encode_tags({"type": "result"})}, id=f"{ENTRIES}-0")
    client.close()


def longest_ping_during(url: str, read: Callable[[], None]) -> tuple[float, float]:
    """(longest PING in ms, read time in ms) while `read()` runs."""
    client = redis.Redis.from_url(url)
    client.ping()
    pings: list[float] = []
    stop = threading.Event()

    def ping() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            client.ping()
            pings.append(time.perf_counter() - started)

    pinger = threading.Thread(target=ping)
    pinger.start()
    started = time.perf_counter()
    read()
    took = time.perf_counter() - started
    stop.set()
    pinger.join()
    client.close()
    return max(pings) * 1000, took * 1000


def filtered_read(url: str, max_steps: int) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(url)
        found, _ = await TagScan(client, STREAM, max_steps).scan("0", 1, {"type": "result"})
        assert len(found) == 1 and found[0].index == ENTRIES
        await client.aclose()

    asyncio.run(run())


def main() -> None:
    results: dict[str, list[tuple[float, float]]] = {"bounded": [], "whole stream": []}
    with tempfile.TemporaryDirectory() as folder, RedisServer(folder, persistent=False) as server:
        fill(server.url)
        for _ in range(RUNS):
            results["bounded"].append(longest_ping_during(server.url, lambda: filtered_read(server.url, MAX_STEPS)))
            whole = longest_ping_during(server.url, lambda: filtered_read(server.url, WHOLE_STREAM))
            results["whole stream"].append(whole)
    print(f"filtered read of a {ENTRIES}-entry sink (type=result, one match at the end), medians of {RUNS} runs")
    medians = {}
    for name, runs in results.items():
        ping = statistics.median(p for p, _ in runs)
        took = statistics.median(t for _, t in runs)
        medians[name] = (ping, took)
        print(f"  {name:13} longest PING of another client {ping:8.2f} ms   read took {took:8.1f} ms")
    bounded, whole = medians["bounded"], medians["whole stream"]
    print(f"  longest PING, bounded / whole stream: {bounded[0] / whole[0]:.3f}")
    print(f"  read time, bounded / whole stream: {bounded[1] / whole[1]:.2f}")


if __name__ == "__main__":
    main()
