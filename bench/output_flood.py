"""A job that floods its output, on the default limits: what it costs the worker, Redis and other requests.

One worker (2 slots, default `log_cap_bytes` 8 MiB and `sink.max_length` 100 000) on a fresh redis-server. Per run:
80 queries are answered and left unread in the output queue; then two jobs `yes | head -c SIZE` run side by side;
then a `yes` without end is cancelled once it has passed its log cap. Printed, medians of RUNS runs:
- the floods' time from put to result, against the same two commands' output read line by line and thrown away
  by a plain Python reader each (the baseline, measured in the same run), as a ratio;
- the worker's peak resident memory (VmHWM) and Redis' used_memory growth;
- log entries each flood stored, and how many of the 80 earlier results were gone after the floods;
- cancel to cancelled of a flooding `yes` (cancelled once it has passed its cap, or after 30 s).
Run: python bench/output_flood.py [--runs N] [--mb SIZE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from scalablejob import JobClient, RequestStatus
from scalablejob.local.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
SERVICE = "flood"
QUERIES = 80
CONFIG = {"metadata": {"name": SERVICE, "type": "ScalableJob", "gpu": 0, "rpc.worker_threads": 2}}


def poll(condition: Callable[[], object], timeout_s: float) -> bool:
    """Whether `condition` came true within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flood_command(size: int) -> str:
    return f"yes | head -c {size}"


def baseline_s(size: int) -> float:
    """Two floods side by side, each read line by line and thrown away by a plain Python reader: what running them
    costs without a service."""
    started = time.monotonic()
    flood = f"subprocess.Popen(['sh', '-c', {flood_command(size)!r}], stdout=-1).stdout"
    code = f"import subprocess\nfor line in {flood}: pass"
    readers = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    for reader in readers:
        reader.wait()
    return time.monotonic() - started


def one_run(folder: Path, size: int) -> dict[str, float]:
    config = folder / "flood.json"
    config.write_text(json.dumps(CONFIG))
    with RedisServer(folder / "redis", persistent=False) as server:
        raw = redis.Redis.from_url(server.url)
        argv = [sys.executable, "-m", "scalablejob", "worker", str(config), "--broker", server.url, "-n", "flood@bench",
                "--app", str(REPO / "examples" / "handlers.py")]  # fmt: skip
        log = (folder / "worker.log").open("wb")
        worker = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            with JobClient(SERVICE, server.url) as client:
                earlier = [client.put(f"q {n}".encode(), {"taskType": "query"})[1] for n in range(QUERIES)]
                for request_id in earlier:
                    client.result(request_id, timeout=120)
                memory_before = raw.info("memory")["used_memory"]
                started = time.monotonic()
                floods = [client.put(json.dumps(["sh", "-c", flood_command(size)]), {"taskType": "command"})[1]
                          for _ in range(2)]  # fmt: skip
                for request_id in floods:
                    client.result(request_id, timeout=600)
                flood_s = time.monotonic() - started
                stored = [sum(1 for e in client.logs(rid) if e.type == "log") for rid in floods]
                lost = sum(1 for rid in earlier if _final_gone(client, rid))
                memory_mb = (raw.info("memory")["used_memory"] - memory_before) / 2**20
                _, endless = client.put(json.dumps(["sh", "-c", "yes"]), {"taskType": "command"})
                poll(lambda: client.state(endless).status is RequestStatus.RUNNING, 60)
                poll(lambda: any(e.tags.get("truncated") for e in client.sink.read(client.sink.last_index(), 1)), 30)
                asked = time.monotonic()
                client.cancel(endless)
                cancelled = poll(lambda: client.state(endless).status is RequestStatus.CANCELLED, 120)
                cancel_s = time.monotonic() - asked if cancelled else float("inf")
            rss = peak_rss_mb(worker.pid)
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            log.close()
            raw.close()
    return {
        "flood_s": flood_s, "baseline_s": baseline_s(size), "rss_mb": rss, "redis_mb": memory_mb,
        "entries": statistics.mean(stored), "lost": lost, "cancel_s": cancel_s,
    }  # fmt: skip


def _final_gone(client: JobClient, request_id: str) -> bool:
    try:
        return client.result(request_id, timeout=5).request_id != request_id
    except Exception:  # the final entry was evicted: the client says it was deleted
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=int, default=20, help="each flood's output, in MB")
    args = parser.parse_args()
    runs = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="flood-bench-") as folder:
            runs.append(one_run(Path(folder), args.mb * 1_000_000))
        print(f"run {n + 1}: " + ", ".join(f"{key} {value:.2f}" for key, value in runs[-1].items()), flush=True)
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"\nmedians of {args.runs} runs, two floods of {args.mb} MB side by side on one worker:")
    print(f"  floods put to result     {median['flood_s']:.1f} s  (baseline: read line by line, thrown away "
          f"{median['baseline_s']:.2f} s; ratio {median['flood_s'] / median['baseline_s']:.1f})")  # fmt: skip
    print(f"  worker peak RSS          {median['rss_mb']:.0f} MB")
    print(f"  Redis used_memory growth {median['redis_mb']:.1f} MB")
    print(f"  log entries per flood    {median['entries']:.0f}")
    print(f"  earlier results lost     {median['lost']:.0f} of {QUERIES}")
    print(f"  cancel of a flooding yes {median['cancel_s']:.2f} s")


if __name__ == "__main__":
    main()
