"""Flower on a service's Celery app (`celery -A module flower`): it starts without the "Inspect method failed"
noise, and shows our tasks as they are: their names, the request id as task id, a cancelled one REVOKED, a failed
command FAILURE with its exit code. The Flower that `up` starts keeps the counts of the workers the scaler stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from celery import states
from celery.exceptions import TaskRevokedError

from conftest import python_command, service_config, wait_until
from scalablejob.host.processes import wait_for_listener
from scalablejob.local.flower import flower_env
from scalablejob.local.ports import free_port
from scalablejob.local.up import flower_argv
from scalablejob.model.routing import service_queues

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
pytest_plugins = ["celery_fixtures"]

STARTUP_INSPECTIONS = ("stats", "active_queues", "registered", "conf")  # what Flower asks every worker at start


def task_info(url: str, task_id: str, final: tuple[str, ...]) -> dict[str, object]:
    """Flower's record of a task, once it is in one of the `final` states."""

    def info() -> dict[str, object] | None:
        answer = httpx.get(f"{url}/api/task/info/{task_id}", timeout=5)
        record = answer.json() if answer.status_code == 200 else None
        return record if record and record.get("state") in final else None

    return wait_until(info, 30, f"Flower never showed {task_id} as one of {final}")


def test_flower_starts_quietly_and_shows_revoked_and_failed_tasks_as_they_are(
    tmp_path, start_celery_flower, start_celery_worker, celery_job, client_for
):
    # given Flower started while no worker is online: its start-up inspection ends, and warns of nothing
    config = service_config("flowered")
    url, log_path = start_celery_flower(config)
    done = [f"Inspect command {method} took" for method in STARTUP_INSPECTIONS]
    wait_until(lambda: all(line in log_path.read_text() for line in done), 30, "Flower never inspected the workers")

    # when a worker comes online, a training task is revoked while it runs, a command fails and a query succeeds
    start_celery_worker(config)
    job = celery_job(config)
    running = job.tasks["train"].delay({"until": str(tmp_path / "never")})
    wait_until(lambda: running.state == states.STARTED, 30, "the training task never started")
    running.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        running.get(timeout=30)
    client = client_for("flowered")
    _, failed = client.put(python_command("import sys; sys.exit(3)"), {"taskType": "command"})
    client.result(failed, timeout=30)
    answered = job.tasks["shout"].delay("hi")
    answered.get(timeout=30)

    # then Flower shows each under its name and request id, as it ended
    revoked = task_info(url, running.id, (states.REVOKED, states.SUCCESS))
    assert (revoked["state"], revoked["name"]) == (states.REVOKED, "train")
    failure = task_info(url, failed, (states.FAILURE, states.SUCCESS))
    assert failure["state"] == states.FAILURE and failure["name"] == "scalablejob.command"
    assert "command exited with code 3" in str(failure["exception"])
    success = task_info(url, answered.id, (states.SUCCESS,))
    assert success["name"] == "shout" and success["uuid"] == answered.id
    # and nothing in its log was a warning about inspecting workers
    assert "Inspect method" not in log_path.read_text()
    # and its broker page reads the service's queues (Flower picks its Redis client by the broker URL's scheme)
    lengths = httpx.get(f"{url}/api/queues/length", timeout=10)
    assert lengths.status_code == 200, lengths.text
    assert {queue["name"] for queue in lengths.json()["active_queues"]} == set(service_queues("flowered"))


@pytest.fixture
def up_flower(tmp_path: Path, redis_url: str) -> Iterator[Callable[[], str]]:
    """Flower as `up` starts it (its command line and environment; no login here): its URL."""
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> str:
        port = free_port()
        with (tmp_path / "up-flower.log").open("wb") as log:
            process = subprocess.Popen(
                flower_argv(port), cwd=tmp_path, env={**os.environ, **flower_env(redis_url, None)}, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        processes.append(process)
        assert wait_for_listener(process, "127.0.0.1", port, 30), (tmp_path / "up-flower.log").read_text()
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def worker_rows(url: str) -> dict[str, dict[str, object]]:
    """Flower's workers page as data: one row per worker it lists (its dashboard totals are sums of these rows)."""
    answer = httpx.get(f"{url}/workers", params={"json": 1}, timeout=5)
    answer.raise_for_status()
    return {row["hostname"]: row for row in answer.json()["data"]}


def worker_alive(url: str, hostname: str) -> bool:
    """Whether Flower lists the worker as online (a worker it no longer lists is not)."""
    return bool(worker_rows(url).get(hostname, {}).get("status"))


@pytest.mark.timeout(60)
def test_flower_as_up_starts_it_keeps_the_succeeded_count_of_a_worker_the_scaler_stopped(
    up_flower, start_worker, client_for
):
    # given the Flower of `up`, and a worker that ran one task, which Flower counted
    url = up_flower()
    worker = start_worker(service_config("counted"))
    wait_until(lambda: worker.hostname in worker_rows(url), 20, "Flower never listed the worker")
    client = client_for("counted")
    _, request_id = client.put(json.dumps({}), {"taskType": "query"})
    client.result(request_id, timeout=10)
    wait_until(lambda: worker_rows(url)[worker.hostname].get("task-succeeded") == 1, 10, "Flower never counted it")

    # when the worker is stopped (a warm shutdown, as the scaler stops an idle worker)
    assert worker.stop() == 0

    # then Flower shows it offline, its count (and so the succeeded total) kept
    wait_until(lambda: not worker_alive(url, worker.hostname), 10, "Flower never saw the worker go")
    rows = worker_rows(url)
    assert rows.get(worker.hostname, {}).get("task-succeeded") == 1, f"Flower dropped the stopped worker: {rows}"
    assert sum(int(row.get("task-succeeded") or 0) for row in rows.values()) == 1


def test_the_flower_of_a_celery_module_asks_for_up_s_login_on_loopback_and_shows_calls_as_they_ended(
    tmp_path, start_celery_flower, start_celery_worker, celery_module
):
    # given `celery -A module flower` started as the docs show it (no option but its port), and a worker
    config = service_config("flowercalls")
    url, log_path = start_celery_flower(config, module="sj_celery_calls", as_documented=True)
    start_celery_worker(config, module="sj_celery_calls")
    tasks = celery_module(config, "sj_celery_calls")
    login_file = tmp_path / ".scalablejob" / "flower-login"
    wait_until(login_file.exists, 30, lambda: f"Flower made no login:\n{log_path.read_text()}")
    user, _, password = login_file.read_text().strip().partition(":")

    def answers() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=2).status_code == 401
        return False

    wait_until(answers, 30, lambda: f"Flower never asked for its login:\n{log_path.read_text()}")

    # when calls retry, fail in a thread and in a command task's process
    retried = tasks.flaky.delay(2)
    failed = tasks.fail.delay("bad input")
    crashed = tasks.train.delay(fail_with="diverged")
    for result in (retried, failed, crashed):
        with contextlib.suppress(Exception):
            result.get(timeout=30)

    # then Flower listens on 127.0.0.1 only, opens with up's login, and shows each call as it ended
    listening = {
        conn.laddr.ip for conn in psutil.net_connections("tcp") if conn.laddr.port == int(url.rsplit(":", 1)[1])
    }
    assert listening == {"127.0.0.1"}
    auth = (user, password)

    def info(task_id: str, final: str) -> dict[str, object] | None:
        answer = httpx.get(f"{url}/api/task/info/{task_id}", auth=auth, timeout=5)
        record = answer.json() if answer.status_code == 200 else None
        return record if record and record.get("state") == final else None

    shown = wait_until(lambda: info(retried.id, states.SUCCESS), 30, "Flower never showed the retried call done")
    assert shown["retries"] == 2 and shown["result"] == "2"
    shown = wait_until(lambda: info(failed.id, states.FAILURE), 30, "Flower never showed the failed call")
    assert "ValueError: bad input" in str(shown["traceback"])
    shown = wait_until(lambda: info(crashed.id, states.FAILURE), 30, "Flower never showed the failed command call")
    assert "raise RuntimeError(fail_with)" in str(shown["traceback"])  # the task's own line, from its process
    # and Flower's own calls reach the tasks: async-apply by the task, send-task by name
    for path in ("async-apply", "send-task"):
        answer = httpx.post(f"{url}/api/task/{path}/add", json={"args": [20, 22]}, auth=auth, timeout=10)
        assert answer.status_code == 200, answer.text
        assert tasks.add.AsyncResult(answer.json()["task-id"]).get(timeout=30) == 42
