"""What durability costs: the embedded Redis with `appendfsync everysec` (the default) against `always`.

For each setting, a fresh redis-server with append-only persistence and one worker answering a no-op query
(examples/handlers.py): put throughput (PUTS requests through `JobClient.put`, nothing consuming them meanwhile)
and put-to-result latency (LATENCY requests one at a time, from `put` to the result entry read back). `no` (the OS
flushes when it likes) is measured too, as the floor. Medians over RUNS runs; ratios against everysec.
Run: python bench/durability.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from scalablejob import JobClient
from scalablejob.local.redis_server import RedisServer
from scalablejob.store.broker import BROKER_ENV

REPO = Path(__file__).resolve().parent.parent
RUNS = 3
PUTS = 2000
LATENCY = 300
MODES = ("everysec", "always", "no")
SERVICE = "durability"
CONFIG = {"metadata": {"name": SERVICE, "type": "ScalableJob", "gpu": 0, "rpc.worker_threads": 4}}


def measure(mode: str, folder: Path) -> tuple[float, float, float]:
    """(puts per second, p50 and p99 put-to-result in ms) on a fresh server with this appendfsync."""
    with RedisServer(folder / mode, persistent=True, appendfsync=mode) as server:
        config = folder / "service.json"
        config.write_text(json.dumps(CONFIG))
        with JobClient(SERVICE, server.url) as client:
            started = time.perf_counter()
            for n in range(PUTS):
                client.put(f"put {n}", {"taskType": "query"})
            rate = PUTS / (time.perf_counter() - started)
            with redis.Redis.from_url(server.url) as raw:
                raw.flushdb()
            worker = subprocess.Popen(
                [sys.executable, "-m", "scalablejob", "worker", str(config), "--app", "examples/handlers.py",
                 "-n", f"bench-{mode}@durability"],
                cwd=REPO, env={**os.environ, BROKER_ENV: server.url}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            try:
                client.result(client.put("warm up", {"taskType": "query"})[1], timeout=60)
                latencies = []
                for n in range(LATENCY):
                    begun = time.perf_counter()
                    client.result(client.put(f"query {n}", {"taskType": "query"})[1], timeout=30)
                    latencies.append((time.perf_counter() - begun) * 1000)
            finally:
                worker.terminate()
                worker.wait(30)
    latencies.sort()
    return rate, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    runs = parser.parse_args().runs
    results: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="durability-") as folder:
        for run in range(runs):
            for mode in MODES:
                results[mode].append(measure(mode, Path(folder) / str(run)))
    base = [statistics.median(values) for values in zip(*results["everysec"], strict=True)]
    print(f"durability: embedded Redis, append-only file, {runs} runs, medians ({PUTS} puts; {LATENCY} round trips)")
    print(f"  {'appendfsync':<12}{'puts/s':>10}{'ratio':>8}{'p50 ms':>10}{'ratio':>8}{'p99 ms':>10}{'ratio':>8}")
    for mode in MODES:
        rate, p50, p99 = (statistics.median(values) for values in zip(*results[mode], strict=True))
        print(f"  {mode:<12}{rate:>10.0f}{rate / base[0]:>8.2f}{p50:>10.2f}{p50 / base[1]:>8.2f}{p99:>10.2f}"
              f"{p99 / base[2]:>8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
