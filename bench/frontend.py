"""Put throughput and put -> result latency through the front end, next to the Python client straight to Redis.

One redis-server, one worker with a no-op query handler, one `scalablejob frontend` process. Per run:
- put throughput: PUTS sequential puts from one client, then the same from THREADS clients at once; the HTTP
  client is the standard library's (keep-alive, one connection per client thread), so the figures are the
  server's, not a client library's;
- latency: LATENCY_REQUESTS sequential no-op queries, each put then waited for: over HTTP a get of the output
  queue by requestId that waits for it (as QueueClient.get(request_id=...) does, with auto delete); straight to
  Redis JobClient.put + JobClient.result.
Medians over RUNS runs, with ratios front end / direct. Run: python bench/frontend.py
"""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import redis

from scalablejob import JobClient
from scalablejob.local.redis_server import RedisServer
from scalablejob.model.routing import service_queues
from scalablejob.store.queues import priority_lists

RUNS = 5
PUTS = 1000
THREADS = 8
LATENCY_REQUESTS = 200
SERVICE = "bench"
TOKEN = "bench-token"
REPO = Path(__file__).resolve().parents[1]
NOOP = "from scalablejob import Job\njob = Job()\n\n@job.query\ndef noop(body, ctx):\n    return b''\n"
PUT_PATH = f"/api/predict/{SERVICE}?" + urlencode({"taskType": "query"})
HEADERS = {"Authorization": TOKEN}


class Http:
    """One keep-alive connection to the front end."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)

    def call(self, method: str, path: str, body: bytes = b"") -> http.client.HTTPResponse:
        self.connection.request(method, path, body=body, headers=HEADERS)
        response = self.connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status}")
        return response

    def put(self) -> str:
        return str(self.call("POST", PUT_PATH, b"{}").getheader("X-Eas-Queueservice-Request-Id"))

    def result(self, request_id: str) -> None:
        query = urlencode({"requestId": request_id, "_timeout_": "30s", "_auto_delete_": "true"})
        self.call("GET", f"/api/predict/{SERVICE}/sink?{query}")


def throughput(make_put: Callable[[], Callable[[], object]], clients: int, puts: int) -> float:
    """Puts per second with `clients` threads sharing `puts` puts."""
    callers = [make_put() for _ in range(clients)]
    threads = [threading.Thread(target=lambda c=c: [c() for _ in range(puts // clients)]) for c in callers]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return puts / (time.perf_counter() - started)


def latencies(round_trip: Callable[[], None], count: int) -> tuple[float, float]:
    """(p50, p99) in ms of `count` sequential round trips."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        round_trip()
        samples.append((time.perf_counter() - started) * 1000)
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def drain(raw: redis.Redis) -> None:
    """Drop the puts of a throughput phase (never run) so they do not slow the next phase."""
    raw.delete(*[key for queue in service_queues(SERVICE) for key in priority_lists(queue)])


def one_run(url: str, broker: str, raw: redis.Redis) -> list[float]:
    with JobClient(SERVICE, broker) as direct:
        fe_1 = throughput(lambda: Http(url).put, 1, PUTS)
        drain(raw)
        direct_1 = throughput(lambda: lambda: direct.put(b"{}", {"taskType": "query"}), 1, PUTS)
        drain(raw)
        fe_n = throughput(lambda: Http(url).put, THREADS, PUTS)
        drain(raw)
        direct_n = throughput(lambda: lambda: direct.put(b"{}", {"taskType": "query"}), THREADS, PUTS)
        drain(raw)
        client = Http(url)
        fe_lat = latencies(lambda: client.result(client.put()), LATENCY_REQUESTS)
        direct_lat = latencies(lambda: direct_round_trip(direct), LATENCY_REQUESTS)
    return [fe_1, direct_1, fe_n, direct_n, *fe_lat, *direct_lat]


def direct_round_trip(client: JobClient) -> None:
    _, request_id = client.put(b"{}", {"taskType": "query"})
    client.result(request_id, timeout=30)


def start_frontend(config: Path, broker: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    argv = [sys.executable, "-m", "scalablejob", "frontend", str(config), "--port", "0", "--broker", broker]
    with log.open("wb") as out:
        env = {**os.environ, "SCALABLEJOB_FRONTEND_TOKEN": TOKEN}  # not --token: a command line is readable by all
        process = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while not (found := re.search(r"listening on (http://\S+)", log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the front end did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return process, found.group(1)


def main() -> None:
    with tempfile.TemporaryDirectory() as name, RedisServer(Path(name) / "redis", persistent=False) as server:
        folder = Path(name)
        config = folder / "bench.json"
        config.write_text(json.dumps({"metadata": {"name": SERVICE, "type": "ScalableJob", "gpu": 0}}))
        (folder / "noop.py").write_text(NOOP)
        worker = subprocess.Popen(
            [sys.executable, "-m", "scalablejob", "worker", str(config), "--broker", server.url, "-n", "bench@b",
             "--app", str(folder / "noop.py")],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        frontend, url = start_frontend(config, server.url, folder / "frontend.log")
        raw = redis.Redis.from_url(server.url)
        try:
            with JobClient(SERVICE, server.url) as warm_up:  # the worker is up before anything is timed
                warm_up.result(warm_up.put(b"{}", {"taskType": "query"})[1], timeout=60)
            rows = [one_run(url, server.url, raw) for _ in range(RUNS)]
        finally:
            for process in (frontend, worker):
                process.terminate()
                process.wait(30)
    report([statistics.median(column) for column in zip(*rows, strict=True)])


def report(med: list[float]) -> None:
    fe_1, direct_1, fe_n, direct_n, fe_p50, fe_p99, direct_p50, direct_p99 = med
    print(f"front end vs Python client straight to Redis, medians of {RUNS} runs")
    print(f"  put throughput, 1 client ({PUTS} puts)    front end {fe_1:7.0f}/s   direct {direct_1:7.0f}/s"
          f"   ratio {fe_1 / direct_1:.2f}")  # fmt: skip
    print(f"  put throughput, {THREADS} clients ({PUTS} puts)   front end {fe_n:7.0f}/s   direct {direct_n:7.0f}/s"
          f"   ratio {fe_n / direct_n:.2f}")  # fmt: skip
    print(f"  put -> result latency, no-op query ({LATENCY_REQUESTS} sequential)")
    print(f"    p50   front end {fe_p50:6.2f} ms   direct {direct_p50:6.2f} ms   ratio {fe_p50 / direct_p50:.2f}")
    print(f"    p99   front end {fe_p99:6.2f} ms   direct {direct_p99:6.2f} ms   ratio {fe_p99 / direct_p99:.2f}")


if __name__ == "__main__":
    main()
