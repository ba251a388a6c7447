"""The scaler's history in Redis: the capped stream of samples, the activity counters and timings the workers (in
batches) and the state scripts write, and the newest failures. The encoding is scalablejob.model.history; this
module only moves it.

The leading scaler appends a sample at most once a second (XADD with MAXLEN: 30 minutes at 1 s, no more) and drains
the timings list in the same step as it reads the counters (one MULTI), so that no timing is counted twice. The
front end reads the stream on redis.asyncio: the last 30 minutes by the Redis server's clock, then what is new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis import asyncio as aioredis

from scalablejob.model import keys
from scalablejob.model.history import (
    MAX_SAMPLES,
    TIMINGS_CAP,
    WINDOW_S,
    ActivityBatch,
    Counts,
    Sample,
    decode_sample,
    encode_sample,
    in_window,
    split_timings,
)
from scalablejob.store.sink import as_text
from scalablejob.store.state import Field

SAMPLE_FIELD = "sample"
READ_BATCH = 200  # new samples read at once by a follower of the stream
_COUNTERS = ("started", "finished", "failed")
_FAILURE_FIELDS = (Field.TASK_TYPE, Field.WORKER, Field.FINISHED_AT, Field.EXIT_CODE, Field.ERROR, Field.MESSAGE)


@dataclass(frozen=True)
class Activity:
    """What the state scripts recorded: the counters as they are now, and the waits and run times since the last
    drain."""

    counts: Counts
    waits: list[float]
    runs: list[float]


@dataclass(frozen=True)
class Failure:
    """A failed request, as the dashboard's table shows it."""

    request_id: str
    task_type: str = ""
    worker: str = ""
    finished_at: float = 0.0
    exit_code: int | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"requestId": self.request_id, "taskType": self.task_type, "worker": self.worker,
                "finishedAt": self.finished_at, "exitCode": self.exit_code, "error": self.error}  # fmt: skip


class HistoryStore:
    """The scaler's side: drain the activity, append samples."""

    def __init__(self, client: redis.Redis, service: str) -> None:
        self._client = client
        self._history = keys.history(service)
        self._counts = keys.activity_counts(service)
        self._timings = keys.activity_timings(service)

    def drain_activity(self) -> Activity:
        """The counters and, taken off the list in the same step, the timings pushed since the last drain."""
        with self._client.pipeline(transaction=True) as pipe:
            pipe.hmget(self._counts, _COUNTERS)
            pipe.lrange(self._timings, 0, -1)
            pipe.delete(self._timings)
            counters, timings, _ = pipe.execute()
        waits, runs = split_timings(timings)
        return Activity(Counts(*(int(value or 0) for value in counters)), waits, runs)

    def append(self, sample: Sample) -> str:
        """Store a sample; returns its stream id. The oldest go beyond MAX_SAMPLES."""
        stream_id: Any = self._client.xadd(
            self._history, {SAMPLE_FIELD: encode_sample(sample)}, maxlen=MAX_SAMPLES, approximate=False
        )
        return as_text(stream_id)

    def samples(self) -> list[Sample]:
        """Every stored sample, oldest first (for tests and tools; the front end reads the window only)."""
        items: Any = self._client.xrange(self._history)
        return decoded(items)


def write_activity(client: redis.Redis, service: str, batch: ActivityBatch, timings_cap: int = TIMINGS_CAP) -> None:
    """Add a worker's counted activity to the service's counters and timings list in one round trip, as the state
    scripts would have task by task (the list kept to its cap)."""
    with client.pipeline(transaction=False) as pipe:
        counts_key = keys.activity_counts(service)
        for name, count in zip(_COUNTERS, batch.counts.as_tuple(), strict=True):
            if count:
                pipe.hincrby(counts_key, name, count)
        if batch.timings:
            timings_key = keys.activity_timings(service)
            pipe.lpush(timings_key, *batch.timings)
            pipe.ltrim(timings_key, 0, timings_cap - 1)
        pipe.execute()


class HistoryReader:
    """The front end's side, on redis.asyncio: the window, then the samples after a stream id; the newest failures."""

    def __init__(self, client: aioredis.Redis, service: str) -> None:
        self._client = client
        self.service = service
        self._history = keys.history(service)
        self._failures = keys.recent_failures(service)

    async def window(self, window_s: float = WINDOW_S) -> list[Sample]:
        """The samples of the last `window_s` seconds by the Redis server's clock, oldest first."""
        seconds, micros = await self._client.time()
        items: Any = await self._client.xrevrange(self._history, count=MAX_SAMPLES)
        return in_window(decoded(reversed(items)), seconds + micros / 1e6, window_s)

    async def after(self, stream_id: str) -> list[Sample]:
        """The samples stored after `stream_id` ('' for all), oldest first."""
        items: Any = await self._client.xrange(self._history, f"({stream_id}" if stream_id else "-", count=READ_BATCH)
        return decoded(items)

    async def newest_failure(self) -> str:
        """The id of the newest failed request ('' for none): a cheap check for whether the table changed."""
        newest: Any = await self._client.lindex(self._failures, 0)
        return as_text(newest) if newest else ""

    async def failures(self, count: int) -> list[Failure]:
        """The newest failed requests, newest first, with what their states still say (a state that has expired
        leaves its id alone)."""
        raw_ids: Any = await self._client.lrange(self._failures, 0, count - 1)
        ids = [as_text(raw) for raw in raw_ids]
        async with self._client.pipeline(transaction=False) as pipe:
            for request_id in ids:
                pipe.hmget(keys.request_state(self.service, request_id), _FAILURE_FIELDS)
            states: Any = await pipe.execute()
        return [failure(request_id, values) for request_id, values in zip(ids, states, strict=True)]


def failure(request_id: str, values: Sequence[bytes | None]) -> Failure:
    """A Failure from the state fields _FAILURE_FIELDS (None where a field is missing)."""
    task_type, worker, finished_at, exit_code, error, message = (as_text(v) if v is not None else "" for v in values)
    return Failure(
        request_id, task_type, worker, float(finished_at or 0), int(exit_code) if exit_code else None,
        error or message,
    )  # fmt: skip


def decoded(items: Any) -> list[Sample]:
    """Samples from XRANGE items; an entry that does not decode is skipped (a newer writer's, say)."""
    samples = []
    for stream_id, fields in items:
        raw = fields.get(SAMPLE_FIELD.encode(), fields.get(SAMPLE_FIELD))
        try:
            samples.append(decode_sample(as_text(stream_id), raw))
        except ValueError:
            continue
    return samples
