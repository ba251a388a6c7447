"""Idle first: a task goes to an idle worker, never into a busy worker's prefetch buffer; the same holds for
workers started by `scalablejob worker` and by `celery -A module worker`."""

from __future__ import annotations

import pytest

from conftest import python_command, service_config, wait_until
from scalablejob import RequestStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
pytest_plugins = ["celery_fixtures"]


@pytest.fixture(params=["scalablejob worker", "celery -A module worker"])
def start_worker(request):
    """Start workers one way or the other: the scenarios below hold for both."""
    return request.getfixturevalue("start_worker" if request.param == "scalablejob worker" else "start_celery_worker")


def sleeping(seconds: float) -> str:
    return python_command(f"import time; time.sleep({seconds})")


def until_released(release) -> str:
    """A long task that ends when the test creates `release`, so no test waits for a fixed time."""
    return python_command(f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.02)")


def running_state(client, request_id):
    state = client.state(request_id)
    return state if state.status is RequestStatus.RUNNING else None


def test_short_tasks_go_to_the_idle_worker_while_the_other_is_busy(tmp_path, start_worker, client_for):
    # given two idle workers, one of which takes a long task
    start_worker(service_config("idle"))
    start_worker(service_config("idle"))
    client = client_for("idle")
    _, long_id = client.put(until_released(tmp_path / "release"), {"taskType": "command"})
    busy = wait_until(lambda: running_state(client, long_id), 20, "the long task never started").worker

    # when short tasks arrive one after another while it runs
    short_workers = []
    for _ in range(3):
        _, short_id = client.put(python_command("pass"), {"taskType": "command"})
        client.result(short_id, timeout=20)
        short_workers.append(client.state(short_id).worker)

    # then every short task ran on the idle worker and finished while the long one still ran
    assert busy not in short_workers
    assert len(set(short_workers)) == 1
    assert client.state(long_id).status is RequestStatus.RUNNING
    (tmp_path / "release").touch()
    client.result(long_id, timeout=20)


def test_a_short_task_never_waits_behind_a_busy_worker(tmp_path, start_worker, client_for):
    # given two idle workers
    start_worker(service_config("idle"))
    start_worker(service_config("idle"))
    client = client_for("idle")

    # when a long task, a shorter task and a short one arrive together
    _, long_id = client.put(until_released(tmp_path / "release"), {"taskType": "command"})
    _, medium_id = client.put(sleeping(1.5), {"taskType": "command"})
    _, short_id = client.put(python_command("pass"), {"taskType": "command"})
    client.result(short_id, timeout=30)
    long_run, medium, short = client.state(long_id), client.state(medium_id), client.state(short_id)

    # then the first two ran at once on different workers, and the short task ran on the first worker to
    # come free: after the medium task, while the long task was still running
    assert long_run.worker != medium.worker
    assert abs(long_run.started_at - medium.started_at) < 2
    assert short.worker == medium.worker
    assert medium.finished_at <= short.started_at
    assert client.state(long_id).status is RequestStatus.RUNNING
    (tmp_path / "release").touch()
    client.result(long_id, timeout=20)
