"""The Kubernetes pool against the stand-in API server (tests/kubernetes/standin.py): no real cluster runs this.

Each run starts a fresh redis-server, stand-in and `scalablejob scaler --kubernetes` (its pods' workers are local
processes, started cold as a kubelet would start a container, without the image pull a cluster adds), and measures:
- burst to first task on a new pod: 1 idle pod (min 1, max 4, one task per worker), 4 tasks of 5 s put at once; from
  the first put to the first task started on a pod the burst created;
- pods deleted while busy: 2 tasks of 6 s and 6 of 0.3 s with a 1 s scale-down window; a pod deleted while a task
  ran on it counts (must be 0); the total over the runs;
- replaced-pod recovery: a 0.5 s task on the one pod, its worker killed with kill -9 once the task runs; from the
  kill to the task started again on the new pod, and to the task ending.

`python bench/kubernetes_standin.py [--runs N]` prints the medians of N runs (3) and, with --json FILE, writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "kubernetes"))  # the tests' rig, one copy

from kube_rig import KubeRig, kube_rig, service

from scalablejob import JobClient, RequestStatus
from scalablejob.scaler.pod_template import pod_of

T = TypeVar("T")


def poll(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s: {what}")
        time.sleep(0.01)
    return value


def command(seconds: float) -> str:
    return json.dumps([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def one_idle_pod(rig: KubeRig) -> str:
    def ready() -> str | None:
        workers = rig.workers("scaler-a")
        return next(iter(workers)) if len(workers) == 1 and "idle" in workers.values() else None

    return poll(ready, 60, "one idle pod")


def burst_to_new_pod(folder: Path) -> float:
    with kube_rig(folder, service("bburst", min=1, max=4)) as rig:
        rig.start_scaler("scaler-a")
        first = pod_of(one_idle_pod(rig))
        client = JobClient("bburst", rig.broker_url)
        began = time.time()
        ids = [client.put(command(5), {"taskType": "command"})[1] for _ in range(4)]

        def first_on_new_pod() -> float | None:
            starts = [state.started_at for request_id in ids if (state := client.state(request_id)) is not None
                      and state.started_at and state.worker and pod_of(state.worker) != first]  # fmt: skip
            return min(starts) if starts else None

        started = poll(first_on_new_pod, 60, "a task on a new pod")
        client.close()
        return started - began


def deleted_while_busy(folder: Path) -> int:
    with kube_rig(folder, service("bbusy", min=1, max=4)) as rig:
        rig.start_scaler("scaler-a")
        one_idle_pod(rig)
        client = JobClient("bbusy", rig.broker_url)
        ids = [client.put(command(6), {"taskType": "command"})[1] for _ in range(2)]
        ids += [client.put(command(0.3), {"taskType": "command"})[1] for _ in range(6)]
        poll(lambda: all(client.state(i).status is RequestStatus.DONE for i in ids), 90, "the burst done")
        poll(lambda: len(rig.live_pods()) == 1, 30, "back to 1 pod")
        offset = time.time() - time.monotonic()
        deleted = {item.pod: item.at + offset for item in rig.standin.deletions}
        busy = 0
        for request_id in ids:
            state = client.state(request_id)
            pod = pod_of(state.worker)
            if pod in deleted and state.started_at <= deleted[pod] <= state.finished_at:
                busy += 1
        client.close()
        return busy


def recovery(folder: Path) -> tuple[float, float]:
    with kube_rig(folder, service("brecover", min=1, max=1)) as rig:
        rig.start_scaler("scaler-a")
        pod = pod_of(one_idle_pod(rig))
        client = JobClient("brecover", rig.broker_url)
        _, request_id = client.put(command(0.5), {"taskType": "command"})
        poll(lambda: client.state(request_id).status is RequestStatus.RUNNING, 30, "the task running")
        killed = time.time()
        os.kill(rig.standin.pid_of(pod), signal.SIGKILL)

        def done() -> Any:
            state = client.state(request_id)
            return state if state.status is RequestStatus.DONE else None

        state = poll(done, 60, "the task done again")
        client.close()
        return state.started_at - killed, state.finished_at - killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    bursts, busy, restarts, ends = [], 0, [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as name:
            bursts.append(burst_to_new_pod(Path(name) / "burst"))
            busy += deleted_while_busy(Path(name) / "busy")
            restarted, ended = recovery(Path(name) / "recovery")
            restarts.append(restarted)
            ends.append(ended)
        print(f"run {run + 1}: burst {bursts[-1]:.2f} s, busy deleted {busy}, restart {restarted:.2f} s, "
              f"end {ended:.2f} s", flush=True)  # fmt: skip
    figures = {
        "runs": args.runs,
        "burst_to_first_task_on_a_new_pod_s": round(statistics.median(bursts), 2),
        "pods_deleted_while_busy_total": busy,
        "kill9_to_task_restarted_on_new_pod_s": round(statistics.median(restarts), 2),
        "kill9_to_task_ended_s": round(statistics.median(ends), 2),
    }
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
