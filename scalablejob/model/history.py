"""The scaler's history, pure: one sample per second of what the leading scaler knows, for the live dashboard.

A sample holds each task type's queue depth, each host's desired / running / busy workers, the tasks started,
finished and failed since the previous sample, the p50 and p95 of their waits (queued -> started) and run times
(started -> finished), and the scale decisions made meanwhile, each with its reason. Samples live in a capped Redis
stream (scalablejob.store.history): its ids are the Redis server's clock, the one clock every writer shares, so a
sample's time is its id, whichever host's scaler wrote it.

The waits and run times come from the request state scripts: each start and finish counts itself and pushes its
time onto a capped list (state_start.lua, state_finish.lua), as a TIMING_WAIT or TIMING_RUN letter followed by the
seconds; the scaler drains that list once per sample. No request state is read for it. A worker counts its own
starts and finishes instead (ActivityTally) and writes them in one step a few times a second, off the task's path:
four commands and their Lua per task less for Redis (issue 26), at the price of at most one flush of counts lost to a
worker's kill -9 (the dashboard's figures, never a request's state).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 30 * 60  # what is kept and shown
SAMPLE_EVERY_S = 1.0  # at most one sample per this
MAX_SAMPLES = int(WINDOW_S / SAMPLE_EVERY_S)  # the stream's MAXLEN: 30 minutes at 1 s and no more
TIMINGS_CAP = 4096  # waits and run times kept between two samples (a sample's percentiles come from at most these)
FAILURES_CAP = 50  # the newest failed requests kept (ids, newest first)
TIMING_WAIT = "w"
TIMING_RUN = "r"
QUANTILES = (0.5, 0.95)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class HostWorkers:
    """One host's workers in a sample: how many its scaler should run, run (not stopping), and are busy."""

    desired: int
    running: int
    busy: int


@dataclass(frozen=True)
class ScaleEvent:
    """A scale decision that changed something: its direction (up, down, hold) and why."""

    change: str
    desired: int
    reason: str


@dataclass(frozen=True)
class Percentiles:
    """p50 and p95 of some durations in seconds, and how many there were."""

    p50: float
    p95: float
    count: int


@dataclass(frozen=True)
class Sample:
    """One second of the scaler's view. `at` (seconds) is the stream id's time: 0 until the sample is stored."""

    dt: float  # seconds since the previous sample (0 for the first one of a leader): started / dt is a rate
    depth: Mapping[str, int]  # task type -> messages waiting
    hosts: Mapping[str, HostWorkers]
    started: int = 0
    finished: int = 0
    failed: int = 0
    wait: Percentiles | None = None
    run: Percentiles | None = None
    events: Sequence[ScaleEvent] = ()
    at: float = 0.0
    id: str = ""  # the stream id, once stored

    def to_json(self) -> dict[str, Any]:
        """What the dashboard's script reads (and what is stored, less `at` and `id`)."""
        return {
            "v": FORMAT_VERSION, "at": self.at, "id": self.id, "dt": self.dt, "depth": dict(self.depth),
            "hosts": {host: [w.desired, w.running, w.busy] for host, w in self.hosts.items()},
            "started": self.started, "finished": self.finished, "failed": self.failed,
            "wait": _percentiles_json(self.wait), "run": _percentiles_json(self.run),
            "events": [[e.change, e.desired, e.reason] for e in self.events],
        }  # fmt: skip


def encode_sample(sample: Sample) -> str:
    """The stream entry's one field: compact JSON, without the time (the stream id says it)."""
    data = sample.to_json()
    del data["at"], data["id"]
    return json.dumps(data, separators=(",", ":"))


def decode_sample(stream_id: str, raw: str | bytes) -> Sample:
    """A stored sample; ValueError names what is wrong with an entry that is not one."""
    try:
        data = json.loads(raw)
        return Sample(
            dt=float(data["dt"]), depth={str(k): int(v) for k, v in data["depth"].items()},
            hosts={str(h): HostWorkers(*(int(n) for n in counts)) for h, counts in data["hosts"].items()},
            started=int(data["started"]), finished=int(data["finished"]), failed=int(data["failed"]),
            wait=_percentiles(data["wait"]), run=_percentiles(data["run"]),
            events=tuple(ScaleEvent(str(c), int(d), str(r)) for c, d, r in data["events"]),
            at=stream_time(stream_id), id=stream_id,
        )  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        expected = f"expected a sample (JSON of version {FORMAT_VERSION})"
        raise ValueError(f"history entry {stream_id}: {expected}: {exc}") from exc


def stream_time(stream_id: str) -> float:
    """The time (seconds, the Redis server's clock) of a stream id `<ms>-<seq>`."""
    return int(stream_id.split("-", 1)[0]) / 1000


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of sorted `values` (non-empty): the smallest value with at least q of them at or
    below it."""
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1]


def summarize(durations: Iterable[float]) -> Percentiles | None:
    """p50 and p95 of some durations; None when there are none."""
    ordered = sorted(durations)
    if not ordered:
        return None
    p50, p95 = (round(percentile(ordered, q), 3) for q in QUANTILES)
    return Percentiles(p50, p95, len(ordered))


def split_timings(entries: Iterable[str | bytes]) -> tuple[list[float], list[float]]:
    """(waits, run times) in seconds from the timings list's entries; an entry that does not parse is skipped."""
    waits: list[float] = []
    runs: list[float] = []
    for entry in entries:
        text = entry.decode() if isinstance(entry, bytes) else entry
        try:
            seconds = float(text[1:])
        except ValueError:
            continue
        if text[:1] == TIMING_WAIT:
            waits.append(seconds)
        elif text[:1] == TIMING_RUN:
            runs.append(seconds)
    return waits, runs


@dataclass(frozen=True)
class Counts:
    """The activity counters (tasks started, finished, failed since the service began), read in one step."""

    started: int = 0
    finished: int = 0
    failed: int = 0

    def since(self, before: Counts | None) -> Counts:
        """What happened between two readings; all zero when there is no earlier one or the counters went back
        (their key was lost), so that no sample shows a burst that did not happen."""
        if before is None or any(now < then for now, then in zip(self.as_tuple(), before.as_tuple(), strict=True)):
            return Counts()
        return Counts(*(now - then for now, then in zip(self.as_tuple(), before.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, int, int]:
        return self.started, self.finished, self.failed


def in_window(samples: Sequence[Sample], now: float, window_s: float = WINDOW_S) -> list[Sample]:
    """The samples of the last `window_s` seconds before `now` (the Redis server's time)."""
    return [sample for sample in samples if sample.at >= now - window_s]


def task_type_of_queue(service: str, queue: str) -> str:
    """The task type a queue of the service carries (`<service>.<type>`); other names as they are."""
    return queue.removeprefix(f"{service}.")


@dataclass
class PendingEvents:
    """Scale decisions made since the last sample: they go into the next one."""

    events: list[ScaleEvent] = field(default_factory=list)

    def add(self, event: ScaleEvent) -> None:
        self.events.append(event)

    def take(self) -> tuple[ScaleEvent, ...]:
        taken, self.events = tuple(self.events), []
        return taken


def _percentiles_json(value: Percentiles | None) -> list[float] | None:
    return None if value is None else [value.p50, value.p95, value.count]


def _percentiles(raw: Any) -> Percentiles | None:
    return None if raw is None else Percentiles(float(raw[0]), float(raw[1]), int(raw[2]))


def encode_timing(kind: str, seconds: float) -> str:
    """A timings list entry as a worker writes it, the state scripts' format: TIMING_WAIT or TIMING_RUN, then the
    seconds (ms digits)."""
    return f"{kind}{max(0.0, seconds):.3f}"


@dataclass(frozen=True)
class ActivityBatch:
    """Starts, finishes and failures one worker counted since its last flush, with the timings list's entries."""

    counts: Counts
    timings: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.timings) or any(self.counts.as_tuple())


class ActivityTally:
    """A worker's own count of the starts and finishes its tasks made, until a flush writes them (safe to call from
    any thread). The timings kept are capped as the list they go to is: more than that between two samples is not
    shown anyway."""

    def __init__(self, timings_cap: int = TIMINGS_CAP) -> None:
        self._cap = timings_cap
        self._lock = threading.Lock()
        self._started = self._finished = self._failed = 0
        self._timings: list[str] = []

    def started(self, wait_s: float | None) -> None:
        """A delivery started, `wait_s` after its request was queued (None: not known)."""
        with self._lock:
            self._started += 1
            self._keep(TIMING_WAIT, wait_s)

    def finished(self, run_s: float | None, failed: bool) -> None:
        """A request's final entry was written, `run_s` after its delivery started (None: not known)."""
        with self._lock:
            self._finished += 1
            self._failed += failed
            self._keep(TIMING_RUN, run_s)

    def take(self) -> ActivityBatch:
        """What was counted since the last take, which starts the count again."""
        with self._lock:
            batch = ActivityBatch(Counts(self._started, self._finished, self._failed), tuple(self._timings))
            self._started = self._finished = self._failed = 0
            self._timings = []
        return batch

    def give_back(self, batch: ActivityBatch) -> None:
        """A batch that could not be written (the broker is away) is counted again, for the next flush."""
        with self._lock:
            self._started += batch.counts.started
            self._finished += batch.counts.finished
            self._failed += batch.counts.failed
            self._timings[:0] = batch.timings[-self._cap :]
            del self._timings[self._cap :]

    def _keep(self, kind: str, seconds: float | None) -> None:
        if seconds is not None and len(self._timings) < self._cap:
            self._timings.append(encode_timing(kind, seconds))
