"""A Celery call of a command task runs in a process of its own (workers/call_process.py): its soft time limit reaches
that process only, terminate sends the signal the revoke names and also stops a call whose process has not started
yet, and a process the task left behind does not hold up its result."""

from __future__ import annotations

import pytest

from conftest import service_config

MODULE = "sj_celery_calls"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
pytest_plugins = ["celery_fixtures"]


def config(name: str) -> dict[str, object]:
    return service_config(name, **{"rpc.worker_threads": 1})


def test_the_soft_time_limit_signals_the_tasks_process_not_the_processes_it_started(start_celery_worker, celery_module):
    # given a command task that started a process of its own and runs past its soft limit
    start_celery_worker(config("softgroup"), module=MODULE)
    tasks = celery_module(config("softgroup"), MODULE)

    # when its soft limit fires, then the task sees SoftTimeLimitExceeded and its own process is still alive
    # (Celery's pool signals the task's process alone: SIGUSR1's default action would end the others)
    assert tasks.soft_with_helper.delay().get(timeout=30) == "its helper outlived the soft limit"
