"""The reconciler at depth: what a backlog of queued requests costs Redis, the scaler's pass, and the unbacked bound.

A private redis-server gets DEPTH queued command requests (one put, then cloned in Redis: tests/support/backlog.py).
A scaler (real Redis metrics and records, fake processes) then passes every 0.25 s for a while, as `run()` would,
and one request's message is removed from the middle of its queue (lost, as a crash between kombu's pop and its
unacked record loses one). Measured:
- the longest Redis command while it runs (SLOWLOG at 0 µs, every command logged);
- a reconcile's duration;
- the longest pass, i.e. how long a burst landing then waits for its new worker, and the longest gap between passes;
- lost -> re-sent: from the removal to the request's retry being recorded (the bound is 10 s plus the passes that
  see it).
Each depth is run with the reconciles off the pass (scaler.reconciler, today's wiring) and, as a baseline in the
same run, inside it (the placement before issue 22, with the paged reads); the figures of an empty queue are the
baseline the goal names ("as fast as with an empty queue"). Medians over --runs runs, with ratios.
Run: python bench/reconcile_depth.py [--runs N] [--depth N ...] [--seconds S]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # the test's backlog, one copy

import itertools

from backlog import fill

from scalablejob import JobClient
from scalablejob.api.celery_app import make_app
from scalablejob.local.redis_server import RedisServer
from scalablejob.model.routing import TaskType, queue_for
from scalablejob.scaler.loop import Fleet, Parts, Scaler
from scalablejob.scaler.metrics import RedisMetrics
from scalablejob.scaler.policy import Policy
from scalablejob.scaler.reconciler import BackgroundRecovery
from scalablejob.scaler.records import ScalerStore
from scalablejob.scaler.recovery import NO_ORPHANS, Recoverer, Recovery
from scalablejob.scaler.testing import FAKE_HOST, FakeLauncher
from scalablejob.store.queues import message_task_id, priority_lists
from scalablejob.store.state import RequestStore

SERVICE = "deep"
INTERVAL_S = 0.25  # the scaler's default pass interval
DEPTHS = (0, 100_000)
RUNS = 3
SECONDS = 30.0  # how long the scaler passes after the loss, at most (it stops once the loss is re-sent)


@dataclass(frozen=True)
class Figures:
    max_command_ms: float
    reconcile_s: float
    max_pass_s: float
    max_gap_s: float
    resent_after_s: float  # inf: not re-sent within the run


class Timed:
    """A Recoverer that times each reconcile of the one it wraps (on whatever thread runs it)."""

    def __init__(self, inner: Recoverer) -> None:
        self.inner = inner
        self.took: list[float] = []

    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]:
        return self.inner.recover(worker, held, reason)

    def reconcile(self, claimed: Collection[str], now: float, orphaned: Mapping[str, str] = NO_ORPHANS) -> list[str]:
        began = time.perf_counter()
        try:
            return self.inner.reconcile(claimed, now, orphaned)
        finally:
            self.took.append(time.perf_counter() - began)


def lose_one(client: redis.Redis, ids: list[str]) -> str:
    """Remove the message of the request in the middle of the queue; returns its id."""
    key = priority_lists(queue_for(SERVICE, TaskType.COMMAND))[-1]
    middle: bytes = client.lindex(key, len(ids) // 2)  # type: ignore[assignment]
    client.lrem(key, 1, middle)
    request_id = message_task_id(middle)
    assert request_id in ids
    return request_id


def passes(scaler: Scaler, until: Callable[[], bool], seconds: float) -> tuple[list[float], list[float]]:
    """Pass every INTERVAL_S (as `run()` does) until `until()` or `seconds`; (pass durations, gaps between starts)."""
    took, starts = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        starts.append(time.monotonic())
        scaler.tick(starts[-1])
        took.append(time.monotonic() - starts[-1])
        time.sleep(max(0.0, starts[-1] + INTERVAL_S - time.monotonic()))
    return took, [later - earlier for earlier, later in itertools.pairwise(starts)]


def one_run(depth: int, background: bool, seconds: float) -> Figures:
    with tempfile.TemporaryDirectory(prefix="reconcile-depth-") as data, RedisServer(data, persistent=False) as server:
        client = redis.Redis.from_url(server.url)
        with JobClient(SERVICE, server.url) as job_client:
            ids = fill(client, job_client, max(depth, 2))
        app = make_app(SERVICE, server.url)
        timed = Timed(Recovery(app, redis.Redis.from_url(server.url), SERVICE))
        recovery = BackgroundRecovery(Recovery(app, client, SERVICE), timed) if background else timed
        parts = Parts(RedisMetrics(client, SERVICE), FakeLauncher(), recovery, ScalerStore(client, SERVICE, FAKE_HOST))
        scaler = Scaler(Fleet(SERVICE, FAKE_HOST), Policy(min=0, max=4, avg_waiting_length=2), parts)
        scaler.start(time.monotonic())
        lost, lost_at = lose_one(client, ids), time.monotonic()
        client.config_set("slowlog-max-len", 1_000_000)
        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()
        store = RequestStore(client, SERVICE)
        resent_at: list[float] = []

        def resent() -> bool:
            state = store.get(lost)
            if state is not None and state.retries and not resent_at:
                resent_at.append(time.monotonic())
            return bool(resent_at)

        took, gaps = passes(scaler, resent, seconds)
        if isinstance(recovery, BackgroundRecovery):
            recovery.stop()
        log = sorted(client.slowlog_get(1_000_000), key=lambda entry: -entry["duration"])
        print("slowest:", [(entry["duration"], entry["command"][:40]) for entry in log[:5]])
        longest = log[0]["duration"] if log else 0
        return Figures(
            longest / 1000, statistics.median(timed.took or [0.0]), max(took), max(gaps, default=0.0),
            resent_at[0] - lost_at if resent_at else float("inf"),
        )  # fmt: skip


def medians(runs: list[Figures]) -> Figures:
    return Figures(*(statistics.median(getattr(run, name) for run in runs) for name in Figures.__dataclass_fields__))


def report(depth: int, placement: str, figures: Figures, baseline: Figures) -> None:
    def ratio(name: str) -> str:
        base = getattr(baseline, name)
        return f"x{getattr(figures, name) / base:.1f}" if base else "-"

    print(
        f"{depth:>9} {placement:<10} max command {figures.max_command_ms:7.2f} ms ({ratio('max_command_ms')}) | "
        f"reconcile {figures.reconcile_s:6.2f} s | longest pass {figures.max_pass_s:6.3f} s ({ratio('max_pass_s')}) | "
        f"longest gap {figures.max_gap_s:6.3f} s | lost -> re-sent {figures.resent_after_s:6.1f} s"
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--depth", type=int, nargs="+", default=list(DEPTHS))
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--inline", action=argparse.BooleanOptionalAction, default=True, help="also run inline")
    options = parser.parse_args()
    empty = medians([one_run(0, True, options.seconds) for _ in range(options.runs)])
    print(f"medians of {options.runs} run(s); ratios against an empty queue (reconciles off the pass)")
    report(0, "background", empty, empty)
    for depth in [depth for depth in options.depth if depth > 0]:
        for background in (True, False) if options.inline else (True,):
            figures = medians([one_run(depth, background, options.seconds) for _ in range(options.runs)])
            report(depth, "background" if background else "inline", figures, empty)


if __name__ == "__main__":
    main()
