"""A Celery call of a command task runs in a process of its own (workers/call_process.py): its soft time limit reaches
that process only, terminate sends the signal the revoke names and also stops a call whose process has not started
yet, and a process the task left behind does not hold up its result."""

from __future__ import annotations

import time

import psutil
import pytest
from celery import states
from celery.exceptions import TaskRevokedError

from conftest import service_config, wait_until
from scalablejob.api.celery_app import make_app

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


def test_terminate_sends_the_signal_the_revoke_names(tmp_path, start_celery_worker, celery_module):
    # given a command task that ignores SIGTERM, running
    worker = start_celery_worker(config("termsignal"), module=MODULE)
    tasks = celery_module(config("termsignal"), MODULE)
    try:
        running = tasks.stubborn.delay(str(tmp_path))
        wait_until((tmp_path / "ready").exists, 30, "the task never started")

        # when it is revoked with terminate and signal SIGKILL
        revoked_at = time.monotonic()
        running.revoke(terminate=True, signal="SIGKILL")

        # then its process is gone at once, not after SIGTERM's grace (10 s), and it ends REVOKED
        wait_until(lambda: not worker.call_processes(), 5, "SIGKILL was not sent: the process lives on")
        assert time.monotonic() - revoked_at < 5
        with pytest.raises(TaskRevokedError):
            running.get(timeout=30)
    finally:
        (tmp_path / "go").touch()


def test_a_terminate_between_the_tasks_start_and_its_process_start_stops_it(
    tmp_path, start_celery_worker, celery_module
):
    # given a command call its worker has accepted, whose process has not started yet
    start_celery_worker(config("earlyterm"), module=MODULE)
    tasks = celery_module(config("earlyterm"), MODULE)
    try:
        call = tasks.held.delay(str(tmp_path))
        wait_until((tmp_path / "accepted").exists, 30, "the worker never accepted the call")

        # when it is terminated (the worker has answered), and then its process could start
        replies = tasks.app.control.revoke(call.id, terminate=True, reply=True, timeout=10, limit=1)
        assert replies, "the worker never answered the revoke"
    finally:
        (tmp_path / "go").touch()

    # then it never runs: it ends REVOKED, as a call terminated a moment later would
    with pytest.raises(TaskRevokedError):
        call.get(timeout=30)
    assert call.state == states.REVOKED


def test_a_process_left_behind_by_a_task_neither_delays_its_result_nor_outlives_it(
    start_celery_worker, celery_module, leftover_pids
):
    # given a command task that returns at once, leaving behind a process that holds its output
    start_celery_worker(config("leftbehind"), module=MODULE)
    tasks = celery_module(config("leftbehind"), MODULE)

    # when it is called
    result = tasks.leave_behind.delay().get(timeout=30)
    leftover_pids.append(int(result["helper"]))  # killed after the test if the worker failed to

    # then its result comes at once (not after a wait for the output's end), and the process it left is gone
    assert time.time() - result["returned_at"] < 3
    wait_until(lambda: not _runs_sleep(int(result["helper"])), 10, "the task's leftover process outlived it")


def _runs_sleep(pid: int) -> bool:
    try:
        return psutil.Process(pid).name() == "sleep" and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_call_whose_process_is_killed_fails_with_a_shells_exit_code(start_celery_worker, celery_module):
    start_celery_worker(config("killedcall"), module=MODULE)
    tasks = celery_module(config("killedcall"), MODULE)

    # when a command task's process is killed by SIGKILL before it reports a result
    call = tasks.killed.delay()

    # then the call fails saying how, as a command's failure says it (137, and the OOM killer where it was at work)
    with pytest.raises(RuntimeError, match=r"^task killed's process ended without reporting a result: command "):
        call.get(timeout=30)
    assert "137" in str(call.result)


def test_a_shared_command_task_in_a_module_without_an_app_runs(start_celery_worker, redis_url):
    # given a worker of a project whose app module imports its tasks module, which holds @shared_task only
    start_celery_worker(config("sharedcmd"), module="sj_celery_shared_app")
    app = make_app("sharedcmd", redis_url)
    try:
        # when its command task is called, then its process finds it, on the app of the worker's module
        assert app.send_task("shared_train", args=[3]).get(timeout=30)["epochs"] == 3
    finally:
        app.close()


def test_a_retry_without_throw_lets_the_task_go_on_and_runs_it_again(tmp_path, start_celery_worker, celery_module):
    start_celery_worker(config("quietretry"), module=MODULE)
    tasks = celery_module(config("quietretry"), MODULE)

    # when a command task calls self.retry(throw=False) and goes on
    call = tasks.retry_quietly.delay(str(tmp_path))

    # then, as in Celery, the code after the retry runs, and the retry runs the task again
    wait_until((tmp_path / "after-retry").exists, 30, "the task did not go on after retry(throw=False)")
    wait_until((tmp_path / "retried").exists, 30, "the retry it asked for never ran")
    assert call.get(timeout=30) in ("first", "retried")  # (Celery keeps the first SUCCESS it stored)


def test_a_command_tasks_time_limits_count_from_its_start_not_from_its_modules_import(start_celery_worker, redis_url):
    # given a worker of a module whose import takes a second in a call's process, and a task whose soft limit is 0.5 s
    start_celery_worker(config("slowimport"), module="sj_celery_slow_import")
    app = make_app("slowimport", redis_url)
    try:
        # when the task is called, then it runs to its end: as in Celery's pool, whose processes have the module
        # loaded, the import is not the task's time
        assert app.send_task("quick").get(timeout=30) == "done"
    finally:
        app.close()
