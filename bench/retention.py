"""Redis memory over 100k requests with retention on, against the same run with retention off.

Each request goes through the writers that a put and a worker use, in their order: RequestStore.create (the put,
mirrored into the front end's input queue, with its index key), mark_running, one log line (Sink.append) and
RequestStore.finish (the result; the request leaves the input queue, its state and index key start to expire).
No Celery worker runs them: on 2 cores a worker manages a few hundred no-op tasks a second, so two runs of 100k
would take many minutes, and nothing a worker adds to Redis stays (the task message is popped off its list and
results are ignored, task_ignore_result), so the keys that can grow are exactly these writers'.

Retention on: the output queue keeps MAX_AGE_S seconds (and at most SINK_MAX_LENGTH entries), and a finished
request is forgotten MAX_AGE_S after it ended. Retention off: limits no run reaches. Redis' `used_memory` is
sampled every SAMPLE_EVERY requests, each run on a fresh redis-server. Run: python bench/retention.py
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import redis

from scalablejob.local.redis_server import RedisServer
from scalablejob.model import keys
from scalablejob.model.config import QueueConfig
from scalablejob.store.limits import record_limits
from scalablejob.store.sink import EntryType, Sink, entry_tags
from scalablejob.store.state import RequestStatus, RequestStore

REQUESTS = 100_000
SAMPLE_EVERY = 10_000
SERVICE = "bench"
MAX_AGE_S = 3
SINK_MAX_LENGTH = 20_000
NEVER = 10**9  # a limit no run reaches: retention off
PAYLOAD = b"x" * 200
RETENTION = {
    "on": QueueConfig(sink_max_length=SINK_MAX_LENGTH, sink_max_age_s=MAX_AGE_S),
    "off": QueueConfig(input_max_length=NEVER, sink_max_length=NEVER, sink_max_age_s=NEVER),
}


@dataclass(frozen=True)
class Sample:
    requests: int
    used_memory: int
    keys: int
    sink_length: int
    seconds: float


def one_request(store: RequestStore, sink: Sink, number: int) -> None:
    """A no-op query from put to result, through the scripts a front end and a worker run."""
    request_id = f"r{number}"
    store.create(request_id, "query", data=PAYLOAD, tags={"taskType": "query"})
    store.mark_running(request_id, "bench-worker")
    sink.append(b"a log line", entry_tags(request_id, "query", EntryType.LOG))
    store.finish(sink, request_id, RequestStatus.DONE, PAYLOAD, entry_tags(request_id, "query", EntryType.RESULT))


def sample(client: redis.Redis, requests: int, started: float) -> Sample:
    memory = int(client.info("memory")["used_memory"])
    length = int(client.xlen(keys.sink_stream(SERVICE)))
    return Sample(requests, memory, int(client.dbsize()), length, time.monotonic() - started)


def run(queue: QueueConfig) -> list[Sample]:
    """Memory every SAMPLE_EVERY requests on a fresh redis-server whose service keeps `queue`'s limits."""
    with tempfile.TemporaryDirectory() as folder, RedisServer(folder, persistent=False) as server:
        client = redis.Redis.from_url(server.url)
        record_limits(client, SERVICE, queue)
        store, sink = RequestStore(client, SERVICE), Sink(client, SERVICE)
        samples, started = [], time.monotonic()
        for number in range(1, REQUESTS + 1):
            one_request(store, sink, number)
            if number % SAMPLE_EVERY == 0:
                samples.append(sample(client, number, started))
        client.close()
    return samples


def report(name: str, samples: list[Sample]) -> None:
    print(f"retention {name}:")
    print(f"  {'requests':>9} {'used_memory MB':>15} {'keys':>8} {'sink length':>12} {'seconds':>8}")
    for s in samples:
        print(f"  {s.requests:>9} {s.used_memory / 2**20:>15.1f} {s.keys:>8} {s.sink_length:>12} {s.seconds:>8.1f}")
    growth = samples[-1].used_memory / samples[0].used_memory
    print(f"  used_memory at {samples[-1].requests} / at {samples[0].requests} requests: {growth:.2f}")


def main() -> None:
    print(f"{REQUESTS} requests; retention on: sink.max_age_seconds {MAX_AGE_S}, sink.max_length {SINK_MAX_LENGTH}")
    runs = {name: run(queue) for name, queue in RETENTION.items()}
    for name, samples in runs.items():
        report(name, samples)
    on, off = runs["on"][-1].used_memory, runs["off"][-1].used_memory
    print(f"used_memory after {REQUESTS} requests, retention on / off: {on / off:.3f}")


if __name__ == "__main__":
    main()
