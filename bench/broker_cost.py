"""The broker's cost per task: Redis time and commands per no-op task, and memory per queued request, against plain
Celery 5.x (prefetch 1, late acks) on the same redis-server in the same run (issue 26, goals 1 and 2).

Per task, for each kind: plain Celery's no-op task (`celery worker -P prefork -c 1`, tuned, no results), plain
Celery's task that runs the no-op command (`true`, by subprocess.run, as a Celery task runs a script: the anchor that
does in its worker what our command task does), our no-op query task (`JobClient.put` and a `scalablejob worker`
with rpc.worker_threads 1 whose handler returns at once), and our no-op command task (`["true"]`). With the worker
warm and idle, Redis' counters are reset (CONFIG RESETSTAT), TASKS tasks are put and drained, and after a settle of
SETTLE_S (so a batch flushed after the last task counts) the counters are read:
- cpu: Redis' main thread CPU (INFO cpu, user + sys) per task: what one Redis core spends, parsing and replies
  included; this is the figure that bounds tasks per second per Redis core;
- cmd: INFO commandstats' usec summed over every command per task. Redis counts a command a script runs twice: in
  its own row and in the script's (EVALSHA) row, so for us this sum is an upper bound; Celery runs no scripts;
- calls: commands per task (commandstats calls, those run inside scripts included), and script calls per task.
- round trips: read events Redis served per task (INFO stats total_reads_processed), the bench's own polls included.
The bench's own calls (INFO, CONFIG, OBJECT: commands the measured parts never send) are left out. Completion is
polled with OBJECT ENCODING on the queue's lists and kombu's unacked hash (gone once the last task is acknowledged).
Memory: with no worker, INFO memory's used_memory before and after MEMORY_REQUESTS puts of a BODY_BYTES body, per
request (a FLUSHALL before each).
Scripts: commandstats lumps every script into one EVALSHA row, so each script a task runs (the put's, the start
with the message's unacknowledged record, the finish with its ack; the last two as a worker runs them, the dashboard
counted apart) is replayed alone, SCRIPT_CALLS times with no worker, and its usec per call taken as the least of
SCRIPT_REPEATS rounds (a preempted round on a busy machine only inflates), with the commands it runs.
Where Redis runs matters: sharing its cores with the workers (the default here), each task's scripts run on caches
that the worker's own work has just cooled, most of all a command task's process start; with `--pin`, Redis has the
first core to itself and the bench, the workers and the clients the others, as a deployment that gives Redis a core
of its own runs it. Redis then also idles between tasks, on both sides, and pays a wake-up per round trip.
Medians of --runs N (the machine is shared and noisy); ratios ours / Celery's. `--top K` prints the K commands
that cost the most per task of each kind (from the median run's counters).
Run: python bench/broker_cost.py [--runs N] [--tasks N] [--only celery|celery_command|query|command|memory|scripts]
[--pin] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celery
import psutil
import redis
from compare_celery import stop
from plain_celery import PlainCelery, answering

from scalablejob import JobClient
from scalablejob.api.celery_app import make_app
from scalablejob.local.redis_server import RedisServer
from scalablejob.local.scaler_process import RUN_MARKER_ENV, kill_marked, poll
from scalablejob.model.history import ActivityTally
from scalablejob.model.routing import TaskType, service_queues
from scalablejob.store.queues import priority_lists
from scalablejob.store.state import RequestStatus, RequestStore, UnackedMessage

RUNS = 3
TASKS = 2000
MEMORY_REQUESTS = 2000
BODY_BYTES = 100
SCRIPT_CALLS, SCRIPT_REPEATS = 1000, 7
NO_OP_COMMAND = ["true"]  # the command task: ours, and plain Celery's that runs it
SETTLE_S = 1.0  # after the last task: batched writes (events, presence) that a task caused still count
TIMEOUT_S = 300.0
OWN_COMMANDS = ("info", "config", "object", "flushall", "ping")  # the bench's, never sent by the parts measured
HANDLER = '''"""broker_cost's query handler: returns at once."""
from scalablejob import Job

job = Job()


@job.query
def noop(body, ctx):
    return b""
'''
CELERY_QUEUE = "brokercost.celery"
TUNED = {"task_acks_late": True, "worker_prefetch_multiplier": 1, "task_default_queue": CELERY_QUEUE}


@dataclass
class Drain:
    """What Redis did for one drain of `tasks` tasks."""

    tasks: int
    cpu_us: float  # main thread CPU, user + sys
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # command -> calls, usec
    worker_cpu_us: float = 0.0  # the worker's processes (pool children and reaped jobs included), user + sys
    reads: float = 0.0  # read events Redis served (INFO stats): about one per round trip, the bench's polls included
    writes: float = 0.0  # replies written to a socket (INFO stats)

    @property
    def calls(self) -> float:
        return sum(row["calls"] for row in self.stats.values()) / self.tasks

    @property
    def cmd_us(self) -> float:
        return sum(row["usec"] for row in self.stats.values()) / self.tasks

    @property
    def scripts(self) -> float:
        return sum(row["calls"] for name, row in self.stats.items() if name in ("eval", "evalsha")) / self.tasks

    def per_task(self) -> dict[str, float]:
        return {"cpu_us": self.cpu_us / self.tasks, "cmd_us": self.cmd_us, "calls": self.calls,
                "scripts": self.scripts, "worker_cpu_us": self.worker_cpu_us / self.tasks,
                "reads": self.reads / self.tasks, "writes": self.writes / self.tasks}  # fmt: skip


def main_thread_cpu_us(client: redis.Redis) -> float:
    info: Any = client.info("cpu")
    return (float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])) * 1e6


def socket_events(client: redis.Redis) -> tuple[float, float]:
    """(reads, writes) Redis has processed: its round trips, whatever their commands."""
    info: Any = client.info("stats")
    return float(info["total_reads_processed"]), float(info["total_writes_processed"])


def command_stats(client: redis.Redis) -> dict[str, dict[str, float]]:
    raw: Any = client.info("commandstats")
    rows = {name.removeprefix("cmdstat_"): row for name, row in raw.items()}
    return {name: {"calls": float(row["calls"]), "usec": float(row["usec"])} for name, row in rows.items()
            if name.split("|")[0] not in OWN_COMMANDS}  # fmt: skip


def drained(client: redis.Redis, lists: list[str]) -> bool:
    """No message waits and none is unacknowledged (OBJECT ENCODING: a command the parts measured never send)."""
    return all(client.object("encoding", key) is None for key in [*lists, "unacked"])


def tree_cpu_us(pid: int) -> float:
    """CPU of a process and its descendants (live ones, and the children it reaped), user + sys."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total * 1e6


def measure(client: redis.Redis, put_all: Callable[[], None], lists: list[str], tasks: int, worker_pid: int) -> Drain:
    """Reset the counters, put the tasks, wait until they are drained (seen twice, so a message between its BRPOP
    and its unacked record is not missed), settle, read the counters (Redis' and the worker's CPU)."""
    client.config_resetstat()
    cpu, worker_cpu, (reads, writes) = main_thread_cpu_us(client), tree_cpu_us(worker_pid), socket_events(client)
    put_all()
    poll(lambda: drained(client, lists), TIMEOUT_S, f"{tasks} tasks drained", interval=0.05)
    time.sleep(0.3)
    poll(lambda: drained(client, lists), TIMEOUT_S, f"{tasks} tasks drained (again)", interval=0.05)
    time.sleep(SETTLE_S)
    after = socket_events(client)
    return Drain(tasks, main_thread_cpu_us(client) - cpu, command_stats(client), tree_cpu_us(worker_pid) - worker_cpu,
                 after[0] - reads, after[1] - writes)  # fmt: skip


@dataclass(frozen=True)
class Rig:
    url: str
    folder: Path
    marker: str
    tasks: int


def celery_drain(rig: Rig, task: str = "baseline.noop", args: tuple[Any, ...] = ()) -> Drain:
    """Plain Celery's tasks `task(*args)`: the no-op task, or (`baseline.command`) a command run to its end."""
    with PlainCelery(rig.folder / "celery", rig.url, rig.marker, settings=TUNED) as plain, \
            redis.Redis.from_url(rig.url) as client:  # fmt: skip
        worker = plain.start_worker("cost@bench", "prefork", 1)
        try:
            poll(lambda: plain.answering(["cost@bench"]), TIMEOUT_S, "the Celery worker answering", interval=0.2)
            sent = plain.task(task)
            warm(lambda: sent.delay(*args), client, priority_lists(CELERY_QUEUE))
            return measure(client, lambda: [sent.delay(*args) for _ in range(rig.tasks)],
                           priority_lists(CELERY_QUEUE), rig.tasks, worker.pid)  # fmt: skip
        finally:
            stop([worker])


def warm(put: Callable[[], object], client: redis.Redis, lists: list[str]) -> None:
    for _ in range(20):
        put()
    poll(lambda: drained(client, lists), TIMEOUT_S, "the warm-up drained", interval=0.05)


@contextlib.contextmanager
def our_worker(rig: Rig, service: str) -> Iterator[tuple[JobClient, int]]:
    config = rig.folder / f"{service}.json"
    config.write_text(json.dumps({"metadata": {"name": service, "type": "ScalableJob", "gpu": 0,
                                               "rpc.worker_threads": 1}}))  # fmt: skip
    (rig.folder / "cost_handler.py").write_text(HANDLER)
    name = f"{service}@bench"
    argv = [sys.executable, "-m", "scalablejob", "worker", str(config), "--broker", rig.url,
            "--app", str(rig.folder / "cost_handler.py"), "-n", name]  # fmt: skip
    with (rig.folder / f"{service}.log").open("ab") as log:
        worker = subprocess.Popen(argv, env={**os.environ, RUN_MARKER_ENV: rig.marker}, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)  # fmt: skip
    app = make_app(service, rig.url)
    try:
        poll(lambda: answering(app, [name]), TIMEOUT_S, "the scalablejob worker answering", interval=0.2)
        with JobClient(service, rig.url) as client:
            yield client, worker.pid
    finally:
        app.close()
        stop([worker])


def our_drain(rig: Rig, task_type: TaskType) -> Drain:
    service = f"cost{task_type.value}"
    body, tags = (b"{}", {"taskType": "query"}) if task_type is TaskType.QUERY else (
        json.dumps(NO_OP_COMMAND), {"taskType": "command"})  # fmt: skip
    lists = [key for queue in service_queues(service) for key in priority_lists(queue)]
    with our_worker(rig, service) as (jobs, pid), redis.Redis.from_url(rig.url) as client:
        warm(lambda: jobs.put(body, tags), client, lists)
        ids: list[str] = []
        drain = measure(client, lambda: ids.extend(jobs.put(body, tags)[1] for _ in range(rig.tasks)), lists,
                        rig.tasks, pid)  # fmt: skip
        unfinished = [i for i in ids if not ((state := jobs.state(i)) and state.status.finished)]
        if unfinished:
            raise RuntimeError(f"{len(unfinished)} of {rig.tasks} requests did not finish, e.g. {unfinished[0]}")
        return drain


def used_memory(client: redis.Redis) -> int:
    info: Any = client.info("memory")
    return int(info["used_memory"])


def memory_per_request(client: redis.Redis, put: Callable[[], object], count: int) -> float:
    client.flushall()
    put()  # the first put creates what every later one shares (counters, the set of input streams)
    before = used_memory(client)
    for _ in range(count):
        put()
    return (used_memory(client) - before) / count


def memory(rig: Rig) -> tuple[float, float]:
    """(ours, Celery's) bytes per queued request of a BODY_BYTES body, no worker running."""
    body = "x" * BODY_BYTES
    with JobClient("costmem", rig.url) as jobs, redis.Redis.from_url(rig.url) as client, \
            PlainCelery(rig.folder / "celerymem", rig.url, rig.marker, settings=TUNED) as plain:  # fmt: skip
        ours = memory_per_request(client, lambda: jobs.put(body, {"taskType": "query"}), MEMORY_REQUESTS)
        noop = plain.task("baseline.noop")
        theirs = memory_per_request(client, lambda: noop.delay(body), MEMORY_REQUESTS)
        client.flushall()
    return ours, theirs


def script_costs(rig: Rig) -> dict[str, tuple[float, float]]:
    """script -> (usec per call, the least of SCRIPT_REPEATS rounds; commands per call, its own included)."""
    best: dict[str, tuple[float, float]] = {}
    stored = json.dumps([{"body": "x" * 1000}, "", "costscripts.query"])  # about a message as kombu stores it
    with JobClient("costscripts", rig.url) as jobs, redis.Redis.from_url(rig.url) as client:
        worker = RequestStore(client, "costscripts", ActivityTally())  # as a worker's: the dashboard counted apart

        def take(name: str) -> None:
            stats = command_stats(client)
            usec = stats["evalsha"]["usec"] / stats["evalsha"]["calls"]
            calls = sum(row["calls"] for row in stats.values()) / SCRIPT_CALLS
            best[name] = (min(usec, best.get(name, (usec, 0.0))[0]), calls)
            client.config_resetstat()

        for _ in range(SCRIPT_REPEATS):
            client.flushall()
            client.config_resetstat()
            ids = [jobs.put(b"{}", {"taskType": "query"})[1] for _ in range(SCRIPT_CALLS)]
            take("state_create (put)")
            for request_id in ids:
                held = UnackedMessage(request_id, record=stored, delivered_at=1.0)
                worker.mark_running(request_id, "cost@bench", message=held)
            take("state_start (+ record)")
            for request_id in ids:
                worker.finish(jobs.sink, request_id, RequestStatus.DONE, b"", {"requestId": request_id}, attempt=1,
                              message=UnackedMessage(request_id))  # fmt: skip
            take("state_finish (+ ack)")
    return best


KINDS: dict[str, Callable[[Rig], Drain]] = {
    "celery": celery_drain,
    "celery_command": lambda rig: celery_drain(rig, "baseline.command", (NO_OP_COMMAND,)),
    "query": lambda rig: our_drain(rig, TaskType.QUERY),
    "command": lambda rig: our_drain(rig, TaskType.COMMAND),
}


def median_drain(drains: list[Drain]) -> Drain:
    """The run whose Redis CPU per task is the median one (its counters are shown as the breakdown)."""
    ordered = sorted(drains, key=lambda drain: drain.cpu_us)
    return ordered[len(ordered) // 2]


def top_commands(drain: Drain, count: int) -> list[tuple[str, float, float]]:
    """(command, calls per task, usec per task), most usec first."""
    rows = [(name, row["calls"] / drain.tasks, row["usec"] / drain.tasks) for name, row in drain.stats.items()]
    return sorted(rows, key=lambda row: -row[2])[:count]


def report(
    figures: dict[str, list[Drain]], mem: list[tuple[float, float]], scripts: dict[str, tuple[float, float]], top: int
) -> dict[str, Any]:
    result: dict[str, Any] = {"celery": celery.__version__, "cores": os.cpu_count(), "kinds": {}, "scripts": scripts}
    medians = {kind: {metric: statistics.median(d.per_task()[metric] for d in drains)
                      for metric in ("cpu_us", "cmd_us", "calls", "scripts", "worker_cpu_us", "reads")}
               for kind, drains in figures.items()}  # fmt: skip
    base = medians.get("celery")
    print(f"{'per task':<14} {'Redis CPU us':>12} {'cmdstats us':>12} {'commands':>9} {'scripts':>8}"
          f" {'CPU ratio':>10} {'cmd ratio':>10} {'calls ratio':>11} {'worker CPU us':>14}"
          f" {'round trips':>12}")  # fmt: skip
    for kind, row in medians.items():
        ratios = [row[m] / base[m] if base and base[m] else float("nan") for m in ("cpu_us", "cmd_us", "calls")]
        print(f"{kind:<14} {row['cpu_us']:>12.1f} {row['cmd_us']:>12.1f} {row['calls']:>9.1f} {row['scripts']:>8.2f}"
              f" {ratios[0]:>10.2f} {ratios[1]:>10.2f} {ratios[2]:>11.2f} {row['worker_cpu_us']:>14.1f}"
              f" {row['reads']:>12.2f}")  # fmt: skip
        result["kinds"][kind] = {**row, "ratio_cpu": ratios[0], "ratio_cmd": ratios[1], "ratio_calls": ratios[2],
                                 "runs": [d.per_task() for d in figures[kind]]}  # fmt: skip
    if mem:
        ours, theirs = statistics.median(m[0] for m in mem), statistics.median(m[1] for m in mem)
        print(f"memory per queued request ({BODY_BYTES}-byte body): ours {ours:.0f} B, Celery {theirs:.0f} B, "
              f"ratio {ours / theirs:.2f}")  # fmt: skip
        result["memory"] = {"ours": ours, "celery": theirs, "ratio": ours / theirs, "runs": mem}
    for kind, drains in figures.items():
        drain = median_drain(drains)
        print(f"\n{kind}: top commands per task (calls, usec; script rows include the commands they ran)")
        for name, calls, usec in top_commands(drain, top):
            print(f"  {name:<20} {calls:>7.2f} {usec:>8.1f}")
        result["kinds"][kind]["top"] = top_commands(drain, top)
    if scripts:
        print(f"\neach script alone, {SCRIPT_CALLS} calls, least of {SCRIPT_REPEATS} rounds (usec per call, commands)")
        for name, (usec, calls) in scripts.items():
            print(f"  {name:<26} {usec:>6.1f} {calls:>5.0f}")
    return result


def pin_redis_alone(redis_pid: int | None) -> None:
    """Redis on the first core of this process's, and this process (so every worker and client it starts) on the
    others: the layout of a deployment that gives Redis a core of its own."""
    cores = sorted(os.sched_getaffinity(0))
    if redis_pid is None or len(cores) < 2:
        raise SystemExit("--pin needs a Redis of its own and at least 2 cores")
    os.sched_setaffinity(redis_pid, {cores[0]})
    os.sched_setaffinity(0, set(cores[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--tasks", type=int, default=TASKS)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--only", action="append", choices=[*KINDS, "memory", "scripts"])
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--pin", action="store_true", help="Redis alone on the first core, everything else on the rest")
    args = parser.parse_args()
    chosen = args.only or [*KINDS, "memory", "scripts"]
    marker = uuid.uuid4().hex
    figures: dict[str, list[Drain]] = {kind: [] for kind in KINDS if kind in chosen}
    mem: list[tuple[float, float]] = []
    scripts: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as name, RedisServer(Path(name) / "redis", persistent=False) as server:
        if args.pin:
            pin_redis_alone(server.pid)
        rig = Rig(server.url, Path(name), marker, args.tasks)
        try:
            if "scripts" in chosen:
                scripts = script_costs(rig)
            for run in range(args.runs):
                if "memory" in chosen:
                    mem.append(memory(rig))
                for kind in figures:
                    figures[kind].append(KINDS[kind](rig))
                    print(f"run {run + 1}: {kind} {figures[kind][-1].per_task()}", file=sys.stderr)
        finally:
            kill_marked(marker)
    result = {**report(figures, mem, scripts, args.top), "pinned": args.pin}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
