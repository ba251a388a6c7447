"""Plain Celery 5.7 and scalablejob side by side on one redis-server, in one run: the figures of issue 11's goals.

A fresh redis-server without a password carries both. Every row runs RUNS times; the table shows medians, the ratio
scalablejob / Celery (each row says whether smaller or bigger is better), the goal and whether it is met.
- idle_first: 4 workers x 1 slot get L, S x 10, L, S x 10 (L a 4 s task, S a 0.1 s one); the longest wait of an S
  from its submit to its start. scalablejob: 4 `scalablejob worker`s with rpc.worker_threads 1 running query tasks
  of a handler that sleeps (a call in the worker, as a Celery task is: a command task would add a Python start to
  every S); start = the request state's started_at. Celery: 4 `celery worker -P prefork -c 1`, tuned (prefetch 1,
  late acks) and with its defaults (prefetch 4, early acks); start = time.time() taken by the task.
- gap: one worker, one slot, GAP_TASKS tasks of GAP_TASK_S queued at once; from a task's end to the next one's start,
  p50 and p99 (scalablejob: finished_at to started_at; Celery tuned, -c 1: the times the task records).
- throughput: NOOPS no-op query tasks put, then their results collected (`JobClient.put`, `JobClient.result`), one
  worker with the default rpc.worker_threads (4), vs `celery worker -P prefork -c 2` with Celery's defaults and a
  Redis result backend (`.delay()`, `.get()`); tasks/s from the first put to the last result.
- put_rate: PUTS `JobClient.put` vs PUTS `.delay()` with the result backend above, nothing consuming; puts/s.
  `.delay()` without a result backend is shown too (no goal: such a call leaves no way to its result).
- scale_up: a `scalablejob scaler` (min 0, max BURST, its default interval) gets a burst of BURST command tasks: the
  first task started on a newly spawned worker, and all BURST running, from the submit. Celery: a `celery worker`
  started when its task is queued, start to the task running (bench/scale_up.py's baseline).
Run: python bench/compare_celery.py [--runs N] [--json FILE] [--markdown FILE] [--only ROW]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import celery
import redis
from plain_celery import PlainCelery, answering
from scale_up import all_started, baseline_run, finished

from scalablejob import JobClient, RequestState
from scalablejob.api.celery_app import make_app
from scalablejob.local.redis_server import RedisServer
from scalablejob.local.scaler_process import RUN_MARKER_ENV, ScalerProcess, kill_marked, poll
from scalablejob.model.routing import service_queues
from scalablejob.store.queues import priority_lists

RUNS = 3
LONG_S, SHORT_S, IDLE_WORKERS = 4.0, 0.1, 4
IDLE_ORDER = [LONG_S, *[SHORT_S] * 10, LONG_S, *[SHORT_S] * 10]
GAP_TASKS, GAP_TASK_S = 50, 0.05
NOOPS = 2000
PUTS = 2000
BURST, BURST_TASK_S = 4, 2.0
TIMEOUT_S = 120.0
QUERY = {"taskType": "query"}
TUNED = {"task_acks_late": True, "worker_prefetch_multiplier": 1}
DEFAULTS = {"task_acks_late": False, "worker_prefetch_multiplier": 4}
HANDLER = '''"""Query tasks of compare_celery: the body {"sleep": s} sleeps s seconds, {} returns at once."""
import json, time

from scalablejob import Job

job = Job()


@job.query
def sleep(body, ctx):
    time.sleep(float(json.loads(body).get("sleep", 0)))
    return b""
'''

Runs = list[float]
Figures = dict[str, tuple[Runs, Runs]]  # metric -> (scalablejob's runs, Celery's runs)


@dataclass(frozen=True)
class Rig:
    """What every row shares: the broker, a scratch folder, the marker of every process started, the run count."""

    url: str
    folder: Path
    marker: str
    runs: int

    def config(self, service: str, threads: int | None = None, **sections: Any) -> Path:
        """A service config: rpc.worker_threads `threads` (else the default), and `sections` as they are."""
        metadata: dict[str, object] = {"name": service, "type": "ScalableJob", "gpu": 0}
        metadata.update({"rpc.worker_threads": threads} if threads else {})
        path = self.folder / f"{service}.json"
        path.write_text(json.dumps({"metadata": metadata, **sections}))
        return path

    def celery(self, name: str, settings: Mapping[str, object]) -> PlainCelery:
        """A plain Celery app with a queue of its own (`compare.<name>`)."""
        queue = {"task_default_queue": f"compare.{name}"}
        return PlainCelery(self.folder / name, self.url, self.marker, settings={**settings, **queue})


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Warm shutdown; each process group is killed if it does not end in time."""
    for process in processes:
        process.terminate()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def scalablejob_workers(rig: Rig, service: str, count: int, threads: int | None = None) -> Iterator[JobClient]:
    """`count` warmed-up `scalablejob worker`s of `service` (rpc.worker_threads `threads`, else the default)."""
    config = rig.config(service, threads)
    (rig.folder / "compare_handler.py").write_text(HANDLER)
    names = [f"{service}{n}@compare" for n in range(count)]
    argv = [sys.executable, "-m", "scalablejob", "worker", str(config), "--broker", rig.url,
            "--app", str(rig.folder / "compare_handler.py"), "-n"]  # fmt: skip
    env = {**os.environ, RUN_MARKER_ENV: rig.marker}
    workers = []
    for name in names:
        with (rig.folder / f"{name}.log").open("ab") as log:
            workers.append(subprocess.Popen([*argv, name], env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
    app = make_app(service, rig.url)
    try:
        poll(lambda: answering(app, names), TIMEOUT_S, f"{count} scalablejob workers answering", interval=0.2)
        with JobClient(service, rig.url) as client:
            for request_id in [client.put(b"{}", QUERY)[1] for _ in range(2 * count)]:
                client.result(request_id, timeout=TIMEOUT_S)
            yield client
    finally:
        app.close()
        stop(workers)


@contextlib.contextmanager
def celery_workers(rig: Rig, name: str, settings: Mapping[str, object], count: int, concurrency: int = 1
                   ) -> Iterator[PlainCelery]:  # fmt: skip
    """`count` warmed-up `celery worker -P prefork -c <concurrency>` of a plain app with `settings`."""
    with rig.celery(name, settings) as plain:
        names = [f"{name}{n}@compare" for n in range(count)]
        workers = [plain.start_worker(node, "prefork", concurrency) for node in names]
        try:
            poll(lambda: plain.answering(names), TIMEOUT_S, f"{count} Celery workers answering", interval=0.2)
            run_celery_tasks(plain, [0.0] * 2 * count)
            yield plain
        finally:
            stop(workers)


def finished_states(client: JobClient, ids: list[str]) -> list[RequestState] | None:
    states = [client.state(request_id) for request_id in ids]
    done = [state for state in states if state is not None and state.status.finished]
    return done if len(done) == len(ids) else None


def run_tasks(client: JobClient, durations: list[float]) -> list[tuple[float, RequestState]]:
    """Put a query task per duration; once all have ended, (submit time, final state) of each, in order."""
    submitted = []
    for seconds in durations:
        at = time.time()
        submitted.append((at, client.put(json.dumps({"sleep": seconds}), QUERY)[1]))
    ids = [request_id for _, request_id in submitted]
    states = poll(lambda: finished_states(client, ids), TIMEOUT_S, "every task ended", interval=0.25)
    return [(at, state) for (at, _), state in zip(submitted, states, strict=True)]


def run_celery_tasks(plain: PlainCelery, durations: list[float]) -> list[tuple[float, dict[str, Any]]]:
    """The same with BASELINE_APP's timed task: (submit time, what the task recorded) of each, in order."""
    key, submitted = f"compare:{uuid.uuid4().hex}", []
    for tag, seconds in enumerate(durations):
        submitted.append(time.time())
        plain.send_timed(key, seconds, tag)
    records = poll(lambda: r if len(r := plain.starts(key)) == len(durations) else None, TIMEOUT_S,
                   "every Celery task ended", interval=0.25)  # fmt: skip
    return [(submitted[record["tag"]], record) for record in sorted(records, key=lambda record: record["tag"])]


def longest_short_wait(starts: list[tuple[float, float]]) -> float:
    """(submit, start) of each task of IDLE_ORDER: the longest wait of a short one."""
    return max(start - at for (at, start), seconds in zip(starts, IDLE_ORDER, strict=True) if seconds == SHORT_S)


def idle_first(rig: Rig) -> Figures:
    with scalablejob_workers(rig, "idle", IDLE_WORKERS, threads=1) as client:
        ours = [longest_short_wait([(at, s.started_at or 0) for at, s in run_tasks(client, IDLE_ORDER)])
                for _ in range(rig.runs)]  # fmt: skip
    theirs = {}
    for name, settings in (("tuned", TUNED), ("defaults", DEFAULTS)):
        with celery_workers(rig, name, settings, IDLE_WORKERS) as plain:
            theirs[name] = [longest_short_wait([(at, r["start"]) for at, r in run_celery_tasks(plain, IDLE_ORDER)])
                            for _ in range(rig.runs)]  # fmt: skip
    return {"idle_first": (ours, theirs["tuned"]), "idle_first_defaults": (ours, theirs["defaults"])}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def gaps_ms(spans: list[tuple[float, float]]) -> list[float]:
    """(start, end) of tasks run one after another: each next start minus the previous end, in ms."""
    ordered = sorted(spans)
    return [(after[0] - before[1]) * 1000 for before, after in pairwise(ordered)]


def gap(rig: Rig) -> Figures:
    durations = [GAP_TASK_S] * GAP_TASKS
    with scalablejob_workers(rig, "gap", 1, threads=1) as client:
        ours = [gaps_ms([(s.started_at or 0, s.finished_at or 0) for _, s in run_tasks(client, durations)])
                for _ in range(rig.runs)]  # fmt: skip
    with celery_workers(rig, "gap", TUNED, 1) as plain:
        theirs = [gaps_ms([(r["start"], r["end"]) for _, r in run_celery_tasks(plain, durations)])
                  for _ in range(rig.runs)]  # fmt: skip
    return {
        f"gap_p{round(q * 100)}": ([percentile(g, q) for g in ours], [percentile(g, q) for g in theirs])
        for q in (0.5, 0.99)
    }


def throughput(rig: Rig) -> Figures:
    def ours_once(client: JobClient) -> float:
        started = time.perf_counter()
        for request_id in [client.put(b"{}", QUERY)[1] for _ in range(NOOPS)]:
            client.result(request_id, timeout=TIMEOUT_S)
        return NOOPS / (time.perf_counter() - started)

    def theirs_once(noop: Any) -> float:
        started = time.perf_counter()
        for result in [noop.delay() for _ in range(NOOPS)]:
            result.get(timeout=TIMEOUT_S)
        return NOOPS / (time.perf_counter() - started)

    with scalablejob_workers(rig, "throughput", 1) as client:
        ours = [ours_once(client) for _ in range(rig.runs)]
    with celery_workers(rig, "throughput", {**DEFAULTS, **with_results(rig)}, 1, concurrency=2) as plain:
        noop = plain.task("baseline.noop")
        theirs = [theirs_once(noop) for _ in range(rig.runs)]
    return {"throughput": (ours, theirs)}


def with_results(rig: Rig) -> dict[str, object]:
    return {"task_ignore_result": False, "result_backend": rig.url}


def rate(put: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        put()
    return count / (time.perf_counter() - started)


def put_rate(rig: Rig) -> Figures:
    """Puts per second with nothing consuming; what was put is dropped after each run."""
    figures: dict[str, Runs] = {"ours": [], "results": [], "plain": []}
    with JobClient("puts", rig.url) as client, rig.celery("results", {**DEFAULTS, **with_results(rig)}) as backed, \
            rig.celery("plain", DEFAULTS) as plain, redis.Redis.from_url(rig.url) as raw:  # fmt: skip
        queued = [key for queue in service_queues("puts") for key in priority_lists(queue)]
        tasks = {"results": backed.task("baseline.noop"), "plain": plain.task("baseline.noop")}
        for _ in range(rig.runs):
            figures["ours"].append(rate(lambda: client.put(b"{}", QUERY), PUTS))
            raw.delete(*queued)
            for name, noop in tasks.items():
                figures[name].append(rate(noop.delay, PUTS))
                raw.delete(f"compare.{name}")
    return {"put_rate": (figures["ours"], figures["results"]), "put_rate_plain": (figures["ours"], figures["plain"])}


SCALER_CONFIG = {
    "min": 0, "max": BURST, "strategies": {"avg_waiting_length": 1},
    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 1}, "onZero": {"scaleDownGracePeriodSeconds": 1}},
}  # fmt: skip


def burst(scaler: ScalerProcess, client: JobClient) -> tuple[float, float]:
    """With no worker left: BURST command tasks; (first started on a new worker, all running), from the submit."""
    poll(lambda: scaler.status() != {} and scaler.workers() == {}, TIMEOUT_S, "a pool of 0", interval=0.1)
    submitted = time.time()
    command = json.dumps(["python", "-c", f"import time; time.sleep({BURST_TASK_S})"])
    ids = [client.put(command, {"taskType": "command"})[1] for _ in range(BURST)]
    states = poll(lambda: all_started(client, ids), TIMEOUT_S, "every task of the burst started")
    poll(lambda: all(finished(client, request_id) for request_id in ids), TIMEOUT_S, "the burst finished", 0.1)
    starts = [state.started_at or 0 for state in states]
    return min(starts) - submitted, max(starts) - submitted


def scale_up(rig: Rig) -> Figures:
    config = rig.config("scale", autoscaler=SCALER_CONFIG)
    logs = ("--log-dir", str(rig.folder / "scaled"))
    scaler = ScalerProcess.start(config, rig.url, *logs, marker=rig.marker, log_path=rig.folder / "scaler.log")
    try:
        with JobClient("scale", rig.url) as client:
            bursts = [burst(scaler, client) for _ in range(rig.runs)]
    finally:
        scaler.stop()
        scaler.close()
    with rig.celery("start", TUNED) as plain:
        theirs = [baseline_run(plain, run) for run in range(rig.runs)]
    return {"first_new": ([b[0] for b in bursts], theirs), "all_running": ([b[1] for b in bursts], theirs)}


@dataclass(frozen=True)
class Metric:
    """One row of the table: what is measured, what Celery's figure is, and the goal (met when `met(scalablejob,
    celery)` is true; no goal: None)."""

    label: str
    unit: str
    smaller_is_better: bool
    celery: str
    goal: str = ""
    met: Callable[[float, float], bool] | None = None


def ratio_at_most(bound: float) -> Callable[[float, float], bool]:
    return lambda ours, theirs: ours <= bound * theirs


def ratio_at_least(bound: float) -> Callable[[float, float], bool]:
    return lambda ours, theirs: ours >= bound * theirs


def at_most(bound: float) -> Callable[[float, float], bool]:
    return lambda ours, _: ours <= bound


TUNED_TEXT = "prefork -c 1, prefetch 1 + late acks"
METRICS = {
    "idle_first": Metric("idle-first: longest short-task wait", "s", True, f"4 workers {TUNED_TEXT}",
                         "ratio <= 1.05", ratio_at_most(1.05)),
    "idle_first_defaults": Metric("idle-first: longest short-task wait", "s", True,
                                  "4 workers prefork -c 1, Celery's defaults"),
    "gap_p50": Metric("one-slot gap, end to next start, p50", "ms", True, TUNED_TEXT, "<= 5 ms", at_most(5)),
    "gap_p99": Metric("one-slot gap, end to next start, p99", "ms", True, TUNED_TEXT, "<= 20 ms", at_most(20)),
    "throughput": Metric(f"no-op throughput, {NOOPS} tasks, results collected", "tasks/s", False,
                         "prefork -c 2, defaults, Redis result backend", "ratio >= 1.0", ratio_at_least(1.0)),
    "put_rate": Metric(f"put rate, {PUTS} puts, nothing consuming", "puts/s", False, ".delay(), Redis result backend",
                       "ratio >= 1.0", ratio_at_least(1.0)),
    "put_rate_plain": Metric(f"put rate, {PUTS} puts, nothing consuming", "puts/s", False,
                             ".delay(), no result backend"),
    "first_new": Metric(f"scale-up from 0: first of {BURST} tasks on a new worker", "s", True,
                        "`celery worker` start to its first task", "<= 0.2 s", at_most(0.2)),
    "all_running": Metric(f"scale-up from 0: {BURST} replicas running", "s", True,
                          "`celery worker` start to its first task", "<= 0.4 s", at_most(0.4)),
}  # fmt: skip
ROWS: dict[str, Callable[[Rig], Figures]] = {
    "idle_first": idle_first, "gap": gap, "throughput": throughput, "put_rate": put_rate, "scale_up": scale_up,
}  # fmt: skip


def summary(figures: Figures, runs: int, redis_version: str) -> dict[str, Any]:
    rows = {}
    for key, (ours, theirs) in figures.items():
        metric, mine, base = METRICS[key], statistics.median(ours), statistics.median(theirs)
        rows[key] = {
            "label": f"{metric.label} ({metric.unit}, {'smaller' if metric.smaller_is_better else 'bigger'} is better)",
            "celery_as": metric.celery, "scalablejob": mine, "celery": base, "ratio": mine / base if base else None,
            "goal": metric.goal, "met": None if metric.met is None else metric.met(mine, base),
            "runs": {"scalablejob": ours, "celery": theirs},
        }  # fmt: skip
    machine = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "celery": celery.__version__, "redis_server": redis_version}  # fmt: skip
    return {"date": datetime.date.today().isoformat(), "machine": machine, "runs": runs, "rows": rows}


def shown(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def cells(row: Mapping[str, Any]) -> list[str]:
    """A row as table cells: what, scalablejob, Celery, ratio, goal (and whether it is met), Celery measured as."""
    met = "" if row["met"] is None else (" met" if row["met"] else " NOT met")
    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
    return [row["label"], shown(row["scalablejob"]), shown(row["celery"]), ratio, f"{row['goal'] or '-'}{met}",
            row["celery_as"]]  # fmt: skip


HEADER = ["row", "scalablejob", "Celery", "ratio scalablejob/Celery", "goal", "Celery measured as"]


def heading(result: Mapping[str, Any]) -> str:
    machine = result["machine"]
    return (f"scalablejob vs plain Celery {machine['celery']} on one redis-server {machine['redis_server']}, "
            f"{result['date']}, {machine['cores']} cores, {machine['platform']}, Python {machine['python']}, "
            f"medians of {result['runs']} runs")  # fmt: skip


def report(result: Mapping[str, Any]) -> None:
    table = [HEADER, *(cells(row) for row in result["rows"].values())]
    widths = [max(len(line[column]) for line in table) for column in range(len(HEADER))]
    print(heading(result))
    for line in table:
        print("  ".join(cell.rjust(width) if 0 < n < 4 else cell.ljust(width)
                        for n, (cell, width) in enumerate(zip(line, widths, strict=True))).rstrip())  # fmt: skip


def markdown(result: Mapping[str, Any]) -> str:
    """The table for the README, with the date and the machine."""
    lines = [f"{heading(result)} (`python bench/compare_celery.py`):", "", "| " + " | ".join(HEADER) + " |",
             "|" + "---|" * len(HEADER)]  # fmt: skip
    lines += ["| " + " | ".join(cells(row)) + " |" for row in result["rows"].values()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown (the README's) to this file")
    parser.add_argument("--only", action="append", choices=list(ROWS), help="run this row alone (repeatable)")
    args = parser.parse_args()
    marker, figures = uuid.uuid4().hex, {}
    with tempfile.TemporaryDirectory() as name, RedisServer(Path(name) / "redis", persistent=False) as server:
        rig = Rig(server.url, Path(name), marker, args.runs)
        with redis.Redis.from_url(server.url) as raw:
            redis_version = str(raw.info("server")["redis_version"])
        try:
            for row in args.only or list(ROWS):
                figures.update(ROWS[row](rig))
        finally:
            kill_marked(marker)
    result = summary(figures, args.runs, redis_version)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(result))


if __name__ == "__main__":
    main()
