"""Crash recovery latency: from kill -9 of a busy worker to its task running again on another worker.

The scaler owns two workers; one runs a command task and is killed with SIGKILL. Measured: the time from the
kill to the task's second start (the request state's `started_at`, written by the worker that runs it again).
Baseline measured in the same run: Celery alone (two plain `celery worker`s), which brings an unacknowledged
message back only after its visibility timeout, here shortened to BASELINE_VISIBILITY_S with a 1 s restore scan
(a setting that would run every task longer than that twice). Reference quoted, not measured: kombu's default
visibility timeout is 3600 s (and scalablejob sets 30 days on purpose: recovery is the scaler's job).
Medians over RUNS runs, with ratios. Run: python bench/recovery.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time

import redis
from plain_celery import PlainCelery

from scalablejob import JobClient, RequestState, RequestStatus
from scalablejob.local.scaler_process import ScalerProcess, poll, scaler_rig
from scalablejob.store.presence import read_presence

RUNS = 5
TASK_S = 3.0
# A worker that has just finished a command listens on the command queue again only once its pending BRPOP (on
# the query queue alone while it was busy, workers/gate.py) times out, up to 1 s later. Runs are measured both
# with the surviving worker idle for SETTLE_S (the usual case) and right after it finished the previous run's task.
SETTLE_S = 1.5
SERVICE = "recovery"
BASELINE_VISIBILITY_S = 5.0
DEFAULT_VISIBILITY_S = 3600.0
BASELINE_TRANSPORT = {"visibility_timeout": BASELINE_VISIBILITY_S, "unacked_restore_interval": 1,
                      "unacked_restore_throttle": 1}  # fmt: skip


CONFIG = {
    "metadata": {"name": SERVICE, "type": "ScalableJob", "gpu": 0, "instance": 2},
    "autoscaler": {"min": 2, "max": 2},
}


def scaler_run(scaler: ScalerProcess, client: JobClient, raw: redis.Redis, settle_s: float) -> float:
    poll(lambda: list(scaler.workers().values()) == ["idle", "idle"], 60, "two idle workers")
    time.sleep(settle_s)  # see SETTLE_S
    _, request_id = client.put(
        json.dumps(["python", "-c", f"import time; time.sleep({TASK_S})"]), {"taskType": "command"}
    )
    victim = poll(lambda: running_on(client, request_id), 30, "the task never started")
    killed_at = time.time()
    os.kill(read_presence(raw, SERVICE)[victim].pid, signal.SIGKILL)
    again = poll(lambda: started_again(client, request_id), 30, "the task never started again")
    poll(lambda: state_is(client, request_id, RequestStatus.DONE), 30, "the task never finished")
    return again - killed_at


def started_again(client: JobClient, request_id: str) -> float | None:
    """When the task started after its retry was recorded, once it has."""
    state = client.state(request_id)
    return state.started_at if state is not None and state.retries and state.started_at else None


def state_is(client: JobClient, request_id: str, status: RequestStatus) -> RequestState | None:
    state = client.state(request_id)
    return state if state is not None and state.status is status else None


def running_on(client: JobClient, request_id: str) -> str | None:
    state = client.state(request_id)
    return state.worker if state is not None and state.status is RequestStatus.RUNNING else None


def baseline_run(celery: PlainCelery, run: int) -> float:
    """Two plain Celery workers; the one running the task is killed; the other gets it back after the timeout."""
    workers = [celery.start_worker(f"plain{run}-{n}@bench") for n in range(2)]
    key = f"baseline:recovery:{run}"
    try:
        celery.send(key, 60)
        first = poll(lambda: celery.starts(key), 60, "the baseline task never started")[0]
        killed_at = time.time()
        os.kill(first["pid"], signal.SIGKILL)
        return poll(lambda: celery.starts(key)[1:], 60, "the baseline task never ran again")[0]["at"] - killed_at
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
        celery.client.delete("celery", "unacked", "unacked_index")


def report(ours: list[float], unsettled: list[float], baseline: list[float]) -> None:
    mine, base = statistics.median(ours), statistics.median(baseline)
    print(f"recovery: kill -9 of a busy worker -> its task running again, {len(ours)} runs, medians")
    print(f"  scalablejob scaler                        {mine:6.2f} s   runs {[round(x, 2) for x in ours]}")
    print(f"  ... other worker just freed (see SETTLE_S) {statistics.median(unsettled):6.2f} s   runs "
          f"{[round(x, 2) for x in unsettled]}")  # fmt: skip
    print(f"  baseline: Celery alone, visibility {BASELINE_VISIBILITY_S:g} s    {base:6.2f} s   runs "
          f"{[round(x, 2) for x in baseline]}")  # fmt: skip
    print(f"  ratio scaler / baseline: {mine / base:.3f}")
    print(f"  reference (quoted): kombu's default visibility timeout {DEFAULT_VISIBILITY_S:g} s; "
          f"ratio {mine / DEFAULT_VISIBILITY_S:.5f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    runs = parser.parse_args().runs
    with scaler_rig(CONFIG) as rig:
        url = rig.broker_url
        with JobClient(SERVICE, url) as client, redis.Redis.from_url(url) as raw:
            settled = [scaler_run(rig.scaler, client, raw, SETTLE_S) for _ in range(runs)]
            unsettled = [scaler_run(rig.scaler, client, raw, 0.0) for _ in range(runs)]
        with PlainCelery(rig.folder / "baseline", url, rig.marker, BASELINE_TRANSPORT) as celery:
            baseline = [baseline_run(celery, run) for run in range(runs)]
    report(settled, unsettled, baseline)


if __name__ == "__main__":
    main()
