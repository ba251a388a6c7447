"""Flower on a service's Celery app (`celery -A module flower`): it starts without the "Inspect method failed"
noise, and shows our tasks as they are: their names, the request id as task id, a cancelled one REVOKED, a failed
command FAILURE with its exit code."""

from __future__ import annotations

import httpx
import pytest
from celery import states
from celery.exceptions import TaskRevokedError

from conftest import python_command, service_config, wait_until

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
    running.revoke()
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
