"""The scaler with a real redis-server and real worker processes: scale up, down, to zero, crash recovery, adoption.

Windows and grace periods are 1 to 2 s; every wait polls with a deadline; every process a test starts carries a
marker in its environment, and the fixture kills whatever carries it, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import REPO, python_command, service_config, wait_until
from scalablejob import JobClient, RequestStatus
from scalablejob.api.user_code import import_user_module
from scalablejob.local.scaler_process import ScalerProcess, is_gone, kill_marked
from scalablejob.store.presence import read_presence

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

INTERVAL = ("--interval", "0.2")
READY_TIMEOUT_S = 30.0


def scaled_config(name: str, *, min: int, max: int = 4, avg: float = 2, down_s: float = 1, grace_s: float = 2,
                  **metadata: Any) -> dict[str, Any]:  # fmt: skip
    config = service_config(name, **metadata)
    config["autoscaler"] = {
        "min": min, "max": max, "strategies": {"avg_waiting_length": avg},
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": down_s},
                     "onZero": {"scaleDownGracePeriodSeconds": grace_s}},
    }  # fmt: skip
    return config


def sleeping(seconds: float, then: str = "") -> str:
    return python_command(f"import time; time.sleep({seconds}); {then or 'pass'}")


@pytest.fixture
def start_scaler(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., ScalerProcess]]:
    """Start `scalablejob scaler` processes; afterwards stop them and kill anything they started."""
    marker = uuid.uuid4().hex
    scalers: list[ScalerProcess] = []

    def start(config: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> ScalerProcess:
        path = tmp_path / f"{config['metadata']['name']}.json"
        path.write_text(json.dumps(config))
        log_path = tmp_path / f"scaler{len(scalers)}.log"
        argv = [*INTERVAL, "--log-dir", str(tmp_path / "workers"), *args]
        scaler = ScalerProcess.start(path, redis_url, *argv, marker=marker, log_path=log_path, env=env)
        scalers.append(scaler)
        return scaler

    yield start
    for scaler in scalers:
        scaler.stop()
        scaler.close()
    kill_marked(marker)


def wait_for_idle(scaler: ScalerProcess, count: int) -> dict[str, str]:
    def ready() -> bool:
        if scaler.process.poll() is not None:
            pytest.fail(f"the scaler exited {scaler.process.returncode}:\n{scaler.log()}")
        return len(scaler.workers()) == count and scaler.count("idle") == count

    wait_until(ready, READY_TIMEOUT_S, lambda: f"{count} idle worker(s) never showed up:\n{scaler.log()}")
    return scaler.workers()


def running_on(client: JobClient, request_id: str) -> str | None:
    state = client.state(request_id)
    return state.worker if state is not None and state.status is RequestStatus.RUNNING else None


def test_a_burst_grows_the_pool_to_ceil_n_over_avg_capped_by_max_then_back_to_min(start_scaler, client_for):
    # given an idle pool of one worker: min 1, max 3, avg_waiting_length 2, a 1 s scale-down window
    scaler = start_scaler(scaled_config("burst", min=1, max=3), "--metrics-port", "0")
    wait_for_idle(scaler, 1)
    client = client_for("burst")

    # when 8 command tasks of 1 s arrive at once: ceil(8 / 2) = 4, capped at 3
    ids = [client.put(sleeping(1), {"taskType": "command"})[1] for _ in range(8)]
    most = 0

    def all_done() -> bool:
        nonlocal most
        most = max(most, len(scaler.workers()))
        return all(client.state(request_id).status is RequestStatus.DONE for request_id in ids)

    wait_until(all_done, 60, lambda: f"the burst never finished:\n{scaler.log()}")

    # then there were 3 workers, never more, all of which ran tasks, and the pool goes back to 1
    assert most == 3
    assert len({client.state(request_id).worker for request_id in ids}) == 3
    wait_until(lambda: len(scaler.workers()) == 1, 15, lambda: f"the pool never went back to min:\n{scaler.log()}")
    port = re.search(r"Prometheus metrics on http://127\.0\.0\.1:(\d+)/metrics", scaler.log())
    assert port is not None, scaler.log()
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5).read().decode()
    assert 'scalablejob_scale_decisions_total{change="up",service="burst"}' in metrics
    assert re.search(r'scalablejob_replicas\{service="burst"\} 1\.0', metrics)


def test_with_min_0_the_pool_goes_to_zero_after_the_grace_period_and_back_up_on_new_work(start_scaler, client_for):
    # given a scaler with min 0, one initial worker and a 2 s grace period
    started = time.monotonic()
    scaler = start_scaler(scaled_config("zero", min=0, down_s=0.5, grace_s=2, instance=1))
    wait_for_idle(scaler, 1)

    # when nothing arrives, the pool goes to zero, but not before the grace period
    wait_until(lambda: scaler.status().get("replicas") == "0" and not scaler.workers(), 20, scaler.log())
    assert time.monotonic() - started >= 2
    assert re.search(r"-> desired=0 \(down\): .*idle for [\d.]+ s >= the 2 s grace period", scaler.log())

    # then a new task brings a worker back, and it runs
    client = client_for("zero")
    _, request_id = client.put(python_command("print('again')"), {"taskType": "command"})
    entry = client.result(request_id, timeout=30)
    assert (entry.data, entry.tags["exitCode"]) == (b"again\n", "0")


def test_a_long_task_on_a_worker_being_stopped_finishes(start_scaler, client_for):
    # given a worker running a 2 s command
    scaler = start_scaler(scaled_config("drain", min=1))
    wait_for_idle(scaler, 1)
    client = client_for("drain")
    _, request_id = client.put(sleeping(2, "print('finished')"), {"taskType": "command"})
    wait_until(lambda: running_on(client, request_id), 20, "the task never started")

    # when the scaler stops, which warm-stops that busy worker
    exit_code = scaler.stop()

    # then the task finished normally, and nothing the scaler started is left running
    assert exit_code == 0, scaler.log()
    entry = client.result(request_id, timeout=1)
    assert (entry.data, entry.tags["exitCode"]) == (b"finished\n", "0")
    assert client.state(request_id).retries == 0
    assert "stopping: warm shutdown of 1 worker(s)" in scaler.log()


def test_kill_9_of_a_busy_worker_puts_its_task_back_and_it_completes_on_another_worker(
    start_scaler, client_for, redis_client: redis.Redis, tmp_path: Path
):
    # given two idle workers, one of which runs a 1.5 s command that records its pid
    scaler = start_scaler(scaled_config("crash", min=2, max=2))
    wait_for_idle(scaler, 2)
    client = client_for("crash")
    pids = tmp_path / "command-pids"
    code = f"import os, time; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(1.5); print('ok')"
    _, request_id = client.put(python_command(code), {"taskType": "command"})
    victim = wait_until(lambda: running_on(client, request_id), 20, "the task never started")
    wait_until(pids.exists, 10, "the command never started")
    first_command = int(pids.read_text().split()[0])

    # when that worker is killed with SIGKILL
    killed_at = time.monotonic()
    os.kill(read_presence(redis_client, "crash")[victim].pid, signal.SIGKILL)

    # then its task runs again at once on the other worker, once, and completes within a few seconds
    entry = client.result(request_id, timeout=20)
    assert time.monotonic() - killed_at < 1.5 + 4
    state = client.state(request_id)
    assert (entry.data, state.status, state.retries) == (b"ok\n", RequestStatus.DONE, 1)
    assert state.worker != victim
    results = [e for e in client.read_sink(1, 1000) if e.request_id == request_id and e.type == "result"]
    assert len(results) == 1
    no_stale_entry = lambda: redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0  # noqa: E731
    wait_until(no_stale_entry, 5, "an unacked entry stayed behind (the ack follows the result)")
    assert len(pids.read_text().split()) == 2 and is_gone(first_command)  # what the dead worker ran was killed
    # and the dead worker is replaced
    wait_until(lambda: scaler.count("idle") == 2 and victim not in scaler.workers(), 20, scaler.log())


def test_a_restarted_scaler_adopts_the_workers_of_its_previous_run_then_stops_them_cleanly(start_scaler):
    # given a scaler of GPU workers (1 GPU each, 2 fake GPUs) with its two workers up
    config = scaled_config("adopt", min=2, gpu=1)
    fake_gpus = {"SCALABLEJOB_FAKE_GPUS": "2"}
    first = start_scaler(config, env=fake_gpus)
    workers = wait_for_idle(first, 2)
    presence = read_presence(first.client, "adopt")
    assert sorted(presence[name].gpus for name in workers) == ["GPU-fake-0000", "GPU-fake-0001"]

    # when the scaler is killed with SIGKILL and started again
    first.kill()
    assert not any(is_gone(presence[name].pid) for name in workers)
    second = start_scaler(config, env=fake_gpus)

    # then the new scaler adopts the same two workers, and starts no other
    assert wait_for_idle(second, 2) == workers
    assert "adopted worker" in second.log() and "spawned worker" not in second.log()

    # and when it stops, the workers stop with it: no orphan
    assert second.stop() == 0, second.log()
    assert all(is_gone(presence[name].pid) for name in workers)


def test_celery_calls_grow_the_pool_and_a_killed_workers_call_runs_again(
    start_scaler, redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # given a pool of 1 to 3 workers of a Celery tasks module, one task per worker, and the module here
    config = scaled_config("calls", min=1, max=3, avg=1)
    scaler = start_scaler(config, "--app", str(REPO / "tests" / "support" / "sj_celery_calls.py"))
    wait_for_idle(scaler, 1)
    (tmp_path / "calls.json").write_text(json.dumps(config))
    monkeypatch.setenv("SCALABLEJOB_CONFIG", str(tmp_path / "calls.json"))
    monkeypatch.setenv("SCALABLEJOB_BROKER", redis_url)
    tasks = import_user_module(str(REPO / "tests" / "support" / "sj_celery_calls.py"))

    # when three Celery calls of a command task arrive: the scaler counts them, queued and running
    release = tmp_path / "release"
    calls = [tasks.train.delay(until=str(release)) for _ in range(3)]
    wait_until(lambda: scaler.count("busy") == 3, 30, lambda: f"the pool never ran all three:\n{scaler.log()}")
    # and one busy worker is killed with SIGKILL
    victim = next(presence for presence in read_presence(redis_client, "calls").values() if presence.held)
    os.kill(victim.pid, signal.SIGKILL)
    release.touch()

    # then every call completes, the killed worker's on another worker, and nothing stays unacknowledged
    results = [call.get(timeout=30) for call in calls]
    assert [result["epochs"] for result in results] == [2, 2, 2]
    assert f"1 task(s) requeued {list(victim.held)}" in scaler.log()
    no_stale_entry = lambda: redis_client.hlen("unacked") == 0  # noqa: E731
    wait_until(no_stale_entry, 10, "an unacked entry stayed behind")
    tasks.job.close()
