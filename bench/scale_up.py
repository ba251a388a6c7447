"""Scale-up latency: from a burst submitted to an idle pool to work running on newly spawned workers.

An idle pool of 1 worker (min 1, max BURST, avg_waiting_length 1) receives BURST command tasks at once. Measured,
from the moment the burst is submitted:
- first new: the first task that starts on a worker the scaler spawned for the burst;
- all running: every one of the BURST desired replicas runs a task (the last task started).
Baselines measured in the same run, each started by hand the moment a task is queued, to that task running:
- a plain Celery worker (`celery worker`, threads pool): what any autoscaler that starts workers pays after it
  reacts;
- BURST - 1 scalablejob workers (`scalablejob worker`, what the scaler starts), started at once: so that
  first-new minus this is the scaler's own reaction (starting several workers at once is slower on few cores).
References quoted, not measured: Kubernetes' HPA syncs every 15 s and KEDA polls every 30 s, so their reaction
alone averages 7.5 s and 15 s before the same start.
Medians over RUNS runs, with ratios. Run: python bench/scale_up.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from plain_celery import PlainCelery

from scalablejob import JobClient, RequestState
from scalablejob.local.scaler_process import RUN_MARKER_ENV, ScalerProcess, poll, scaler_rig

RUNS = 5
BURST = 4
TASK_S = 2.0
SERVICE = "bench"
HPA_SYNC_S, KEDA_POLL_S = 15.0, 30.0


CONFIG = {
    "metadata": {"name": SERVICE, "type": "ScalableJob", "gpu": 0, "instance": 1},
    "autoscaler": {"min": 1, "max": BURST, "strategies": {"avg_waiting_length": 1},
                   "behavior": {"scaleDown": {"stabilizationWindowSeconds": 1}}},
}  # fmt: skip


def idle_pool(scaler: ScalerProcess) -> set[str]:
    """Wait until the pool is back to one idle worker; its name."""

    def one_idle() -> set[str] | None:
        workers = scaler.workers()
        return set(workers) if list(workers.values()) == ["idle"] else None

    return poll(one_idle, 60, "an idle pool of 1")


def scaler_run(scaler: ScalerProcess, client: JobClient) -> tuple[float, float]:
    before = idle_pool(scaler)
    submitted = time.time()
    ids = [client.put(json.dumps(["python", "-c", f"import time; time.sleep({TASK_S})"]), {"taskType": "command"})[1]
           for _ in range(BURST)]  # fmt: skip
    states = poll(lambda: all_started(client, ids), 60, "every task of the burst started")
    first_new = min(s.started_at or 0 for s in states if s.worker not in before) - submitted
    all_running = max(s.started_at or 0 for s in states) - submitted
    poll(lambda: all(finished(client, request_id) for request_id in ids), 60, "the burst finished")
    return first_new, all_running


def finished(client: JobClient, request_id: str) -> bool:
    state = client.state(request_id)
    return state is not None and state.status.finished


def all_started(client: JobClient, ids: list[str]) -> list[RequestState] | None:
    states = [client.state(request_id) for request_id in ids]
    started = [s for s in states if s is not None and s.started_at is not None]
    return started if len(started) == len(ids) else None


def baseline_run(celery: PlainCelery, run: int) -> float:
    """A plain Celery worker started when a task is queued: start to the task running."""
    key = f"baseline:start:{run}"
    celery.send(key, 0)
    started = time.time()
    worker = celery.start_worker(f"baseline{run}@bench")
    try:
        return poll(lambda: celery.starts(key), 60, "the baseline task never started")[0]["at"] - started
    finally:
        worker.terminate()
        worker.wait(30)


def own_workers_run(config: Path, broker_url: str, client: JobClient, marker: str, run: int) -> float:
    """BURST - 1 scalablejob workers (as many as the scaler adds) started by hand at once, as many tasks queued
    (another service): start to the first task running."""
    ids = [client.put(json.dumps(["python", "-c", "pass"]), {"taskType": "command"})[1] for _ in range(BURST - 1)]
    started = time.time()
    argv = [sys.executable, "-m", "scalablejob", "worker", str(config), "--broker", broker_url, "-n"]
    env = {**os.environ, RUN_MARKER_ENV: marker}
    workers = [subprocess.Popen([*argv, f"own{run}-{n}@b"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for n in range(BURST - 1)]  # fmt: skip
    try:
        states = poll(lambda: all_started(client, ids), 60, "the tasks never started")
        return min(state.started_at or 0 for state in states) - started
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)


def report(figures: dict[str, list[float]]) -> None:
    median = {name: statistics.median(values) for name, values in figures.items()}
    f, b, own = median["first new"], median["plain Celery"], median["own worker"]
    print(f"scale_up: burst of {BURST} to an idle pool of 1 (max {BURST}), {len(figures['first new'])} runs, medians")
    labels = {
        "first new": "first task on a new worker",
        "all running": f"all {BURST} replicas running",
        "plain Celery": "baseline: plain Celery worker start -> first task",
        "own worker": f"baseline: {BURST - 1} scalablejob workers start -> first task",
    }
    for name, label in labels.items():
        print(f"  {label:50s} {median[name]:6.2f} s   runs {[round(x, 2) for x in figures[name]]}")
    print(f"  ratio first-new / plain Celery start: {f / b:.2f};  / scalablejob workers start: {f / own:.2f}")
    print(f"  the scaler's own reaction (first-new minus scalablejob workers start): {f - own:+.2f} s")
    for name, period in (("HPA sync", HPA_SYNC_S), ("KEDA poll", KEDA_POLL_S)):
        quoted = period / 2 + b  # waiting half a period on average, then the same worker start
        print(
            f"  reference (quoted): {name} every {period:g} s, about {quoted:.1f} s on average; ratio {f / quoted:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    runs = parser.parse_args().runs
    with scaler_rig(CONFIG) as rig:
        own_config = rig.folder / "own.json"
        own_config.write_text(json.dumps({"metadata": {"name": "own", "type": "ScalableJob", "gpu": 0}}))
        url = rig.broker_url
        with PlainCelery(rig.folder / "baseline", url, rig.marker) as celery, JobClient(SERVICE, url) as client, \
                JobClient("own", url) as own_client:  # fmt: skip
            figures: dict[str, list[float]] = {"first new": [], "all running": [], "plain Celery": [], "own worker": []}
            for run in range(runs):
                figures["plain Celery"].append(baseline_run(celery, run))
                figures["own worker"].append(own_workers_run(own_config, url, own_client, rig.marker, run))
                new, all_running = scaler_run(rig.scaler, client)
                figures["first new"].append(new)
                figures["all running"].append(all_running)
    report(figures)


if __name__ == "__main__":
    main()
