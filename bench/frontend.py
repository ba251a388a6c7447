"""Put throughput and put -> result latency through the front end, next to the Python client straight to Redis.

One redis-server, one worker with a no-op query handler, one `scalablejob frontend` process. Per run:
- put throughput: PUTS sequential puts from one client, then the same from THREADS clients at once; the HTTP
  client is the standard library's (keep-alive, one connection per client thread), so the figures are the
  server's, not a client library's;
- latency: LATENCY_REQUESTS sequential no-op queries, each put then waited for: over HTTP a get of the output
  queue by requestId that waits for it (as QueueClient.get(request_id=...) does, with auto delete); straight to
  Redis JobClient.put + JobClient.result.
Medians over RUNS runs, with ratios front end / direct. Run: python bench/frontend.py [--scale [--json FILE]]

`--scale` measures instead what the front end costs and how it grows with processes (issue 26 goal 3), each
figure the median of `--runs` runs, puts of a 2-byte query into a service with no worker:
- CPU per put: the user + system CPU time of every front-end process (psutil, the supervisor and its children)
  around SCALE_PUTS puts sent by one client process over one keep-alive connection, against the CPU time that
  `JobClient.put` takes in its caller for as many puts (time.process_time, every thread of the caller): the ratio
  is the front end's cost per put over the Python client's. The caller puts back to back, its code hot in the CPU's
  caches, while a server sleeps between requests and each one starts cold: so the same caller is also timed with
  PAUSE_S of sleep between puts (not counted, as a server's wait for the next request is not), a second ratio; and
  the front end's CPU per put is also taken with --clients client processes at once (its loop seldom sleeps);
- puts per second of `scalablejob frontend --workers N` for N in --widths, with --clients client processes
  (one keep-alive connection each) sharing SCALE_PUTS * clients puts, timed from their common start to the last
  one's end.
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any
from urllib.parse import urlencode, urlsplit

import psutil
import redis

from scalablejob import JobClient
from scalablejob.local.redis_server import RedisServer
from scalablejob.model import keys
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
    """Drop the puts of a throughput phase (never run) so they do not slow the next phase, nor fill the input
    queue (their states expire by themselves)."""
    raw.delete(*[key for queue in service_queues(SERVICE) for key in priority_lists(queue)])
    raw.xtrim(keys.input_stream(SERVICE, SERVICE), maxlen=0)


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


def start_frontend(config: Path, broker: str, log: Path, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    argv = [sys.executable, "-m", "scalablejob", "frontend", str(config), "--port", "0", "--broker", broker]
    argv += ["--workers", str(workers)] if workers > 1 else []
    with log.open("wb") as out:
        env = {**os.environ, "SCALABLEJOB_FRONTEND_TOKEN": TOKEN}  # not --token: a command line is readable by all
        process = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while not (found := re.search(r"listening on (http://\S+)", log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the front end did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return process, found.group(1)


SCALE_PUTS = 2000
# One client process: connects, warms up, waits for the common start, times its puts, prints start and end.
CLIENT = """
import http.client, sys, time
host, port, path, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
puts, start_at = int(sys.argv[5]), float(sys.argv[6])
connection = http.client.HTTPConnection(host, port, timeout=60)
def put():
    connection.request("POST", path, body=b"{}", headers={"Authorization": token})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"put: {response.status}")
for _ in range(20):
    put()
time.sleep(max(0.0, start_at - time.time()))
started = time.time()
for _ in range(puts):
    put()
print(started, time.time(), flush=True)
"""
PAUSE_S = 0.0003  # about what a front end waits between one client's requests here
# JobClient.put's CPU in its caller, per put, after a warm-up: back to back, then with PAUSE_S between puts.
DIRECT_CPU = """
import sys, time
from scalablejob import JobClient
puts, pause = int(sys.argv[3]), float(sys.argv[4])
with JobClient(sys.argv[1], sys.argv[2]) as client:
    for _ in range(50):
        client.put(b"{}", {"taskType": "query"})
    cpu = time.process_time()
    for _ in range(puts):
        client.put(b"{}", {"taskType": "query"})
    hot = (time.process_time() - cpu) / puts
    cpu = time.process_time()
    for _ in range(puts):
        client.put(b"{}", {"taskType": "query"})
        time.sleep(pause)
    print(hot, (time.process_time() - cpu) / puts)
"""


def tree_cpu(process: psutil.Process) -> float:
    """User + system CPU seconds of a process and its live children."""
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            total += times.user + times.system
    return total


def clients(url: str, count: int, puts: int) -> tuple[float, float]:
    """(puts per second, seconds) of `count` client processes doing `puts` puts each from a common start."""
    parts = urlsplit(url)
    start_at = time.time() + 1.0 + 0.2 * count  # after every client has started and warmed up
    argv = [sys.executable, "-c", CLIENT, parts.hostname or "", str(parts.port), PUT_PATH, TOKEN, str(puts)]
    running = [subprocess.Popen([*argv, str(start_at)], stdout=subprocess.PIPE, text=True) for _ in range(count)]
    spans = [tuple(map(float, p.communicate(timeout=600)[0].split())) for p in running]
    if any(p.returncode for p in running) or any(len(span) != 2 for span in spans):
        raise RuntimeError("a client failed")
    took = max(end for _, end in spans) - min(start for start, _ in spans)
    return count * puts / took, took


def scale(
    broker: str, config: Path, folder: Path, raw: redis.Redis, runs: int, widths: list[int], count: int
) -> dict[str, Any]:
    """CPU per put (front end against JobClient.put) and puts per second with 1.. processes; returns the figures."""
    cpu_rows, direct_rows, paused_rows, loaded_rows = [], [], [], []
    frontend, url = start_frontend(config, broker, folder / "frontend-1.log")
    try:
        process = psutil.Process(frontend.pid)
        for _ in range(runs):
            before = tree_cpu(process)
            clients(url, 1, SCALE_PUTS)
            cpu_rows.append((tree_cpu(process) - before) / SCALE_PUTS)
            drain(raw)
            direct = subprocess.run([sys.executable, "-c", DIRECT_CPU, SERVICE, broker, str(SCALE_PUTS), str(PAUSE_S)],
                                    capture_output=True, text=True, check=True, cwd=REPO)  # fmt: skip
            hot, paused = map(float, direct.stdout.split())
            direct_rows.append(hot)
            paused_rows.append(paused)
            drain(raw)
    finally:
        stop(frontend)
    rates: dict[int, float] = {}
    for width in widths:
        frontend, url = start_frontend(config, broker, folder / f"frontend-{width}.log", workers=width)
        try:
            rows, each = [], SCALE_PUTS // count * 2
            for _ in range(runs):
                before = tree_cpu(psutil.Process(frontend.pid))
                rows.append(clients(url, count, each)[0])
                if width == widths[0]:
                    loaded_rows.append((tree_cpu(psutil.Process(frontend.pid)) - before) / (each * count))
                drain(raw)
            rates[width] = statistics.median(rows)
        finally:
            stop(frontend)
    fe_cpu, direct_cpu = statistics.median(cpu_rows), statistics.median(direct_rows)
    paused_cpu, loaded_cpu = statistics.median(paused_rows), statistics.median(loaded_rows)
    print(f"front end CPU per put vs JobClient.put, medians of {runs} runs ({SCALE_PUTS} puts, one client)")
    print(f"  front end {fe_cpu * 1e6:6.0f} us   JobClient.put {direct_cpu * 1e6:6.0f} us   "
          f"ratio {fe_cpu / direct_cpu:.2f}   (runs, us: {_us(cpu_rows)} / {_us(direct_rows)})")  # fmt: skip
    print(f"  JobClient.put with {PAUSE_S * 1e3:g} ms between puts {paused_cpu * 1e6:6.0f} us   "
          f"ratio {fe_cpu / paused_cpu:.2f}   (runs, us: {_us(paused_rows)})")  # fmt: skip
    print(f"  front end (--workers {widths[0]}) with {count} clients at once {loaded_cpu * 1e6:6.0f} us per put   "
          f"ratio {loaded_cpu / direct_cpu:.2f}   (runs, us: {_us(loaded_rows)})")  # fmt: skip
    print(f"puts per second with {count} client processes, medians of {runs} runs ({os.cpu_count()} cores)")
    for width, rate in rates.items():
        print(f"  --workers {width}   {rate:7.0f}/s   x{rate / rates[widths[0]]:.2f}")
    return {"frontend_us": fe_cpu * 1e6, "jobclient_us": direct_cpu * 1e6, "jobclient_paused_us": paused_cpu * 1e6,
            "loaded_us": loaded_cpu * 1e6, "clients": count, "puts_per_s": rates}  # fmt: skip


def _us(rows: list[float]) -> str:
    return " ".join(f"{row * 1e6:.0f}" for row in rows)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", action="store_true", help="CPU per put and puts/s per number of processes")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--widths", default="1,2,3", help="numbers of front-end processes (--scale)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (--scale)")
    parser.add_argument("--json", type=Path, help="write the figures to this file (--scale)")
    args = parser.parse_args()
    if args.scale:
        with tempfile.TemporaryDirectory() as name, RedisServer(Path(name) / "redis", persistent=False) as server:
            config = Path(name) / "bench.json"
            config.write_text(json.dumps({"metadata": {"name": SERVICE, "type": "ScalableJob", "gpu": 0}}))
            raw = redis.Redis.from_url(server.url)
            figures = scale(server.url, config, Path(name), raw, args.runs, [int(w) for w in args.widths.split(",")],
                            args.clients)  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(figures))
        return
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
