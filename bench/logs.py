"""Print-to-visible latency of log lines, as seen by a reader of the output queue (XREAD on the sink).

A command task prints LINES lines, each carrying the wall-clock time at which it was printed; a reader
blocked on the sink notes when each line arrives. Baselines measured in the same run:
- floor: the same printing program XADDs each line to a Redis stream itself (no worker in between);
- result-only: what a plain Celery task offers, where output is visible only with the result, at the end.
Medians over RUNS runs are printed with ratios. Run: python bench/logs.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from scalablejob import JobClient
from scalablejob.local.redis_server import RedisServer

RUNS = 5
LINES = 200
GAP_S = 0.005
REPO = Path(__file__).resolve().parents[1]
PRINTER = f"import time\nfor n in range({LINES}):\n    print(n, time.time(), flush=True)\n    time.sleep({GAP_S})\n"
DIRECT = (
    "import redis, sys, time\nr = redis.Redis.from_url(sys.argv[1])\n"
    f"for n in range({LINES}):\n    r.xadd('floor', {{'data': f'{{n}} {{time.time()}}'}})\n    time.sleep({GAP_S})\n"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def read_latencies(client: redis.Redis, stream: str, start_id: str, count: int) -> list[tuple[float, float]]:
    """Block on the stream and return, per line, (print time the line carries, arrival time)."""
    latencies: list[tuple[float, float]] = []
    last = start_id
    while len(latencies) < count:
        for _, items in client.xread({stream: last}, block=5000, count=100) or []:
            for entry_id, fields in items:
                last = entry_id
                arrived = time.time()
                parts = fields[b"data"].split()
                if len(parts) == 2 and fields.get(b"tags", b'{"type": "log"}').find(b'"log"') >= 0:
                    latencies.append((float(parts[1]), arrived))
    return latencies


def scalablejob_run(client: JobClient, raw: redis.Redis) -> tuple[list[tuple[float, float]], float]:
    start = f"{client.sink.last_index()}-0"
    found: list[tuple[float, float]] = []
    reader = threading.Thread(target=lambda: found.extend(read_latencies(raw, "bench/sink", start, LINES)))
    reader.start()
    _, request_id = client.put(json.dumps([sys.executable, "-c", PRINTER]), {"taskType": "command"})
    client.result(request_id, timeout=60)
    reader.join(60)
    state = client.state(request_id)
    return found, state.finished_at or time.time()


def floor_run(url: str, raw: redis.Redis) -> list[tuple[float, float]]:
    found: list[tuple[float, float]] = []
    start = raw.xinfo_stream("floor")["last-generated-id"] if raw.exists("floor") else "0-0"
    reader = threading.Thread(target=lambda: found.extend(read_latencies(raw, "floor", start, LINES)))
    reader.start()
    subprocess.run([sys.executable, "-c", DIRECT, url], check=True)
    reader.join(60)
    return found


def main() -> None:
    with tempfile.TemporaryDirectory() as folder, RedisServer(Path(folder), persistent=False) as server:
        config = Path(folder) / "bench.json"
        config.write_text(json.dumps({"metadata": {"name": "bench", "type": "ScalableJob", "gpu": 0}}))
        worker = subprocess.Popen(
            [sys.executable, "-m", "scalablejob", "worker", str(config), "--broker", server.url, "-n", "bench@b"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        raw = redis.Redis.from_url(server.url)
        try:
            with JobClient("bench", server.url) as client:
                rows = []
                for _ in range(RUNS):
                    lines, ended = scalablejob_run(client, raw)
                    latencies = [arrived - printed for printed, arrived in lines]
                    floor = [arrived - printed for printed, arrived in floor_run(server.url, raw)]
                    result_only = [ended - printed for printed, _ in lines]  # visible only when the task ends
                    rows.append([percentile(x, q) for x in (latencies, floor, result_only) for q in (0.5, 0.99)])
        finally:
            worker.terminate()
            worker.wait(30)
    med = [statistics.median(column) * 1000 for column in zip(*rows, strict=True)]
    print(f"log line print-to-visible latency, medians of {RUNS} runs of {LINES} lines (ms)")
    print(f"  scalablejob sink     p50 {med[0]:7.2f}   p99 {med[1]:7.2f}")
    print(f"  floor (direct XADD)  p50 {med[2]:7.2f}   p99 {med[3]:7.2f}   ratio p50 {med[0] / med[2]:.1f}x")
    print(f"  result-only (Celery) p50 {med[4]:7.2f}   p99 {med[5]:7.2f}   ratio p50 {med[4] / med[0]:.0f}x slower")


if __name__ == "__main__":
    main()
