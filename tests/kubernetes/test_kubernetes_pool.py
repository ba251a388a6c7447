"""The scaler's Kubernetes pool against the stand-in API server (standin.py; no real cluster runs these): real
`scalablejob scaler --kubernetes` processes, a real redis-server, and each pod's worker a real process.

Windows are 1 s; every wait polls with a deadline; the rig kills every process it started, even when a test fails.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from kube_rig import KubeRig, kube_rig, service

from conftest import python_command, wait_until
from scalablejob import JobClient, RequestStatus
from scalablejob.scaler.pod_template import pod_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

READY_S = 40.0


def idle_pods(rig: KubeRig, scaler: str, count: int) -> dict[str, str]:
    def ready() -> dict[str, str] | None:
        workers = rig.workers(scaler)
        return workers if len(workers) == count and all(state == "idle" for state in workers.values()) else None

    return wait_until(ready, READY_S, lambda: f"{count} idle pod(s) never showed up:\n{rig.logs()}")


def passes(rig: KubeRig, scaler: str, count: int) -> None:
    """Until the scaler has made `count` more passes (its report's time changed that often)."""
    seen: list[str] = []

    def counted() -> bool:
        at = rig.report(scaler).get("at", "")
        if not seen or seen[-1] != at:
            seen.append(at)
        return len(seen) > count

    wait_until(counted, 20, lambda: f"the scaler {scaler} stopped making passes:\n{rig.logs()}", interval=0.01)


def sleeping(seconds: float, mark: Path | None = None) -> str:
    """A command task that sleeps; with `mark`, it appends `start` then `end` lines to that file."""
    if mark is None:
        return python_command(f"import time; time.sleep({seconds})")
    write = f"open({str(mark)!r}, 'a').write"
    return python_command(f"import time; {write}('start\\n'); time.sleep({seconds}); {write}('end\\n')")


def one_pod_running_a_task(rig: KubeRig, folder: Path) -> tuple[str, JobClient, str, Path]:
    """A scaler with its one pod running a 2 s command task that marks its start and end in a file: the pod's worker,
    a client, the request and the file, once the task has started."""
    rig.start_scaler("scaler-a")
    (worker,) = idle_pods(rig, "scaler-a", 1)
    client = JobClient(rig.service, rig.broker_url)
    mark = folder / "runs.txt"
    _, request_id = client.put(sleeping(2, mark), {"taskType": "command"})
    wait_until(
        lambda: mark.exists() and "start" in mark.read_text(), 20, lambda: f"the task never started:\n{rig.logs()}"
    )
    return worker, client, request_id, mark


def spans(client: JobClient, ids: list[str]) -> list[tuple[str, float, float]]:
    """(pod, start, end) of each request, in wall time."""
    found = []
    for request_id in ids:
        state = client.state(request_id)
        assert state is not None and state.status is RequestStatus.DONE, state
        found.append((pod_of(state.worker), state.started_at, state.finished_at))
    return found


def test_a_burst_grows_to_max_pods_and_shrinking_deletes_only_idle_pods(tmp_path):
    # given a pool of 1 idle pod: min 1, max 4, one task per worker, a 1 s scale-down window
    with kube_rig(tmp_path, service("kburst", min=1, max=4, avg=1)) as rig:
        rig.start_scaler("scaler-a")
        idle_pods(rig, "scaler-a", 1)
        client = JobClient("kburst", rig.broker_url)
        deleted_at: dict[str, float] = {}

        # when 2 long (6 s) and 6 short (0.3 s) command tasks arrive at once
        ids = [client.put(sleeping(6), {"taskType": "command"})[1] for _ in range(2)]
        ids += [client.put(sleeping(0.3), {"taskType": "command"})[1] for _ in range(6)]
        most = 0

        def all_done() -> bool:
            nonlocal most
            most = max(most, len(rig.standin.pods()))
            return all(client.state(request_id).status is RequestStatus.DONE for request_id in ids)

        wait_until(all_done, 60, lambda: f"the burst never finished:\n{rig.logs()}")
        wait_until(lambda: len(rig.live_pods()) == 1, 20, lambda: f"the pool never went back to 1 pod:\n{rig.logs()}")

        # then it grew to 4 pods, never more, and each pod it deleted was idle: no task ran on it at the deletion
        assert most == 4
        assert len(rig.standin.created) == 4
        for deletion in rig.standin.deletions:
            deleted_at.setdefault(deletion.pod, time.time() - (time.monotonic() - deletion.at))
        busy = [(pod, start, end) for pod, start, end in spans(client, ids)
                if pod in deleted_at and start <= deleted_at[pod] <= end]  # fmt: skip
        assert busy == [], f"pods deleted while a task ran on them: {busy}"
        assert len(deleted_at) == 3
        assert rig.standin.unexpected == []
        client.close()


def test_kill_9_of_a_pods_worker_fails_the_pod_and_a_new_pod_ends_the_task_once(tmp_path):
    # given one pod running a 2 s command task that marks its start and end
    with kube_rig(tmp_path, service("kkill", min=1, max=1)) as rig:
        first, client, request_id, mark = one_pod_running_a_task(rig, tmp_path)

        # when its worker is killed with kill -9
        os.kill(rig.standin.pid_of(pod_of(first)), signal.SIGKILL)

        # then the pod is Failed (exit 137) and gone, a new pod runs the task again, and it ends once
        wait_until(
            lambda: client.state(request_id).status is RequestStatus.DONE, 40, lambda: f"never done:\n{rig.logs()}"
        )
        state = client.state(request_id)
        assert pod_of(state.worker) != pod_of(first)
        assert mark.read_text().splitlines() == ["start", "start", "end"]
        assert len(rig.standin.created) == 2
        wait_until(lambda: pod_of(first) not in rig.standin.pods(), 10, "the failed pod's object stayed")
        assert "exited with code 137" in rig.scalers[0].log()
        client.close()


def test_a_restarted_scaler_adopts_the_pods_and_starts_no_extra_pod(tmp_path):
    # given a scaler with 2 idle pods (min 2)
    with kube_rig(tmp_path, service("kadopt", min=2, max=3)) as rig:
        first = rig.start_scaler("scaler-a")
        pods = idle_pods(rig, "scaler-a", 2)

        # when it is killed with kill -9 and started again
        first.kill()
        rig.start_scaler("scaler-a")
        wait_until(lambda: "adopted worker" in rig.scalers[1].log(), 20, lambda: f"nothing adopted:\n{rig.logs()}")

        # then the new scaler holds the same 2 pods, and no pod was created or deleted
        def same_pods() -> bool:
            report = rig.report("scaler-a")
            return report.get("pid") == str(rig.scalers[1].process.pid) and rig.workers("scaler-a") == pods

        wait_until(same_pods, 20, lambda: f"the restarted scaler does not report the same pods:\n{rig.logs()}")
        passes(rig, "scaler-a", 5)  # time for a late extra pod to show up, if one would
        assert len(rig.standin.created) == 2
        assert rig.standin.deletions == []


def test_pods_stuck_pending_count_against_max_and_status_says_why(tmp_path):
    # given GPU workers (1 GPU each), max 3, and a cluster with 1 free nvidia.com/gpu
    with kube_rig(tmp_path, service("kgpu", min=1, max=3, gpu=1), gpu_capacity=1) as rig:
        rig.start_scaler("scaler-a")
        idle_pods(rig, "scaler-a", 1)
        client = JobClient("kgpu", rig.broker_url)

        # when 6 long tasks arrive
        for _ in range(6):
            client.put(sleeping(30), {"taskType": "command"})

        # then 3 pods exist, 2 of them Pending (unschedulable), no more are created, and the status says why
        def pending_said() -> str | None:
            reason = rig.report("scaler-a").get("reason", "")
            return reason if "2 pod(s) Pending" in reason else None

        reason = wait_until(pending_said, 20, lambda: f"status never said the pods are Pending:\n{rig.logs()}")
        assert "Insufficient nvidia.com/gpu" in reason
        assert sorted(rig.standin.phases().values()) == ["Pending", "Pending", "Running"]
        passes(rig, "scaler-a", 5)  # time for a fourth pod to show up, if one would
        assert len(rig.standin.created) == 3
        assert rig.report("scaler-a")["replicas"] == "3"
        client.close()


def test_two_scalers_make_one_decision_and_the_standby_takes_over_without_extra_pods(tmp_path):
    # given two scaler replicas of one service (min 2)
    with kube_rig(tmp_path, service("ktwo", min=2, max=4)) as rig:
        rig.start_scaler("scaler-a")
        rig.start_scaler("scaler-b")

        def leader_and_standby() -> tuple[str, str] | None:
            reasons = {name: rig.report(name).get("reason", "") for name in ("scaler-a", "scaler-b")}
            leaders = [name for name, reason in reasons.items() if "leader of the pool" in reason]
            standbys = [name for name, reason in reasons.items() if reason.startswith("standby")]
            return (leaders[0], standbys[0]) if len(leaders) == 1 and len(standbys) == 1 else None

        leader, standby = wait_until(leader_and_standby, READY_S, lambda: f"no leader and standby:\n{rig.logs()}")
        pods = idle_pods(rig, leader, 2)
        assert rig.workers(standby) == {}

        # when the leader is killed with kill -9
        rig.scalers[0 if leader == "scaler-a" else 1].kill()

        # then the standby leads, holds the same 2 pods, and no pod was ever created beyond them
        wait_until(lambda: rig.workers(standby) == pods, 20, lambda: f"the standby never took the pods:\n{rig.logs()}")
        assert "leader of the pool" in rig.report(standby)["reason"]
        assert len(rig.standin.created) == 2
        assert rig.standin.deletions == []


def test_a_busy_pod_deleted_by_someone_else_finishes_its_task_warm_and_is_replaced(tmp_path):
    # given one pod running a 2 s command task (grace period 25 s)
    with kube_rig(tmp_path, service("kwarm", min=1, max=1)) as rig:
        first, client, request_id, mark = one_pod_running_a_task(rig, tmp_path)

        # when the pod is deleted as `kubectl delete pod` would (its worker gets SIGTERM)
        rig.standin.delete("jobs", pod_of(first), None)

        # then the task ends on that pod, run once, the pod goes, and a new pod replaces it
        wait_until(
            lambda: client.state(request_id).status is RequestStatus.DONE, 20, lambda: f"never done:\n{rig.logs()}"
        )
        assert pod_of(client.state(request_id).worker) == pod_of(first)
        assert mark.read_text().splitlines() == ["start", "end"]
        wait_until(lambda: len(rig.standin.created) == 2 and pod_of(first) not in rig.standin.pods(), 20,
                   lambda: f"the pod was not replaced:\n{rig.logs()}")  # fmt: skip
        assert rig.standin.deletions[0].grace_s == 25
        client.close()
