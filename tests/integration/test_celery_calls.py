"""A Celery project's tasks module runs with one line changed (tests/support/sj_celery_calls.py): real Celery tasks
called Celery's way, on a `celery -A module worker` that is a scalablejob worker; results in Celery's result backend on
the same Redis; send_task by name from a process without the code, `celery call` and `celery result`; retries, time
limits (a command task's process, a query task's thread), countdown and expires; canvas; revoke(terminate=True)
stopping a command task's process; and what no worker could run refused at call time, in one sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from celery import chain, chord, group, states
from celery.exceptions import NotRegistered, TaskRevokedError, TimeLimitExceeded

from conftest import REPO, service_config, wait_until
from scalablejob import RequestError
from scalablejob.api.celery_app import make_app
from scalablejob.model import keys

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
pytest_plugins = ["celery_fixtures"]
SUPPORT = REPO / "tests" / "support"

MODULE = "sj_celery_calls"


def config(name: str) -> dict[str, object]:
    return service_config(name, **{"rpc.worker_threads": 2})


def test_tasks_take_celerys_calling_conventions_retries_and_time_limits(start_celery_worker, celery_module):
    # given a worker of the tasks module, and the same module imported here, as a Celery project's caller does
    worker = start_celery_worker(config("calls"), module=MODULE)
    tasks = celery_module(config("calls"), MODULE)

    # when tasks are called with positional and keyword arguments and Celery's options
    added = tasks.add.delay(2, 3)
    keyworded = tasks.add.apply_async(kwargs={"x": 1, "y": 2}, priority=0)
    me = tasks.whoami.apply_async((1,), {"k": "v"}, task_id="my-own-id")
    sent_at = time.monotonic()  # before the call: its eta is counted from inside it
    later = tasks.add.apply_async((20, 22), countdown=0.5)
    expired = tasks.add.apply_async((1, 1), expires=0.001)
    retried = tasks.flaky.delay(2)
    gave_up = tasks.always_down.delay()
    trained = tasks.train.delay(epochs=3)
    soft = tasks.slow.delay(10)
    hard = tasks.slow.apply_async((10,), soft_time_limit=4, time_limit=0.5)
    spun = tasks.spin.delay(10)  # a query task: the limits of a thread
    spun_hard = tasks.spin.apply_async((10,), time_limit=0.2)  # before its soft limit (0.5 s)

    # then each ends as it would on Celery's own worker
    assert added.get(timeout=30) == 5 and keyworded.get(timeout=30) == 3
    assert me.get(timeout=30) == {"id": "my-own-id", "args": [1], "kwargs": {"k": "v"}, "retries": 0}
    assert later.get(timeout=30) == 42 and time.monotonic() - sent_at >= 0.5
    with pytest.raises(TaskRevokedError):
        expired.get(timeout=30)
    assert retried.get(timeout=30) == 2
    with pytest.raises(ConnectionError, match="still down"):
        gave_up.get(timeout=30)
    assert gave_up.state == states.FAILURE and added.state == states.SUCCESS
    result = trained.get(timeout=30)  # a command task: in a process of its own, not the worker's
    assert result["epochs"] == 3 and result["id"] == trained.id and result["pid"] != worker.process.pid
    assert soft.get(timeout=30) == "stopped at the soft time limit"
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=30)
    assert spun.get(timeout=30) == "stopped at the soft time limit"
    with pytest.raises(TimeLimitExceeded):
        spun_hard.get(timeout=30)


def test_a_failing_task_raises_its_own_exception_with_the_tasks_traceback(start_celery_worker, celery_module):
    start_celery_worker(config("fails"), module=MODULE)
    tasks = celery_module(config("fails"), MODULE)

    query = tasks.fail.delay("bad input")
    command = tasks.train.delay(fail_with="diverged at epoch 3")

    with pytest.raises(ValueError, match=r"^bad input$"):
        query.get(timeout=30)
    with pytest.raises(RuntimeError, match=r"^diverged at epoch 3$"):
        command.get(timeout=30)
    assert query.state == command.state == states.FAILURE
    assert "raise RuntimeError(fail_with)\nRuntimeError: diverged at epoch 3" in command.traceback  # the child's


def test_send_task_celery_call_and_celery_result_work_from_a_process_without_the_code(
    start_celery_worker, celery_cli, redis_url, redis_client
):
    # given a worker of the tasks module, and here only the service's app (no task code)
    start_celery_worker(config("byname"), module=MODULE)
    app = make_app("byname", redis_url)
    try:
        # when tasks are sent by name, and through `celery call`
        summed = app.send_task("total", args=[[1, 2, 3]])
        trained = app.send_task("train", kwargs={"epochs": 4})
        called = celery_cli(config("byname"), "call", "add", "--args", "[40, 2]", module=MODULE)

        # then they run as the worker's tasks, and `celery result` reads what one returned
        assert summed.get(timeout=30) == 6 and trained.get(timeout=30)["epochs"] == 4
        assert called.returncode == 0, called.stderr
        task_id = called.stdout.strip()
        wait_until(lambda: app.AsyncResult(task_id).state == states.SUCCESS, 30, "the called task never succeeded")
        shown = celery_cli(config("byname"), "result", task_id, module=MODULE)
        assert shown.returncode == 0 and shown.stdout.strip() == "42", shown.stderr

        # and what no worker of the service could run is refused before anything is sent, naming why
        with pytest.raises(RequestError, match=r"^unknown task 'ad' for service byname: expected one of add, "):
            app.send_task("ad", args=[1, 2])
        with pytest.raises(RequestError, match=r"^queue 'other': task add runs on its type's queue byname.query"):
            app.send_task("add", args=[1, 2], queue="other")
        # and a name sent before any worker registered its tasks, which the worker lacks, fails: never PENDING forever
        redis_client.delete(keys.task_registry("byname"))
        with pytest.raises(NotRegistered, match="renamed"):
            app.send_task("renamed", args=[1]).get(timeout=30)
    finally:
        app.close()


def test_canvas_chains_groups_chords_and_signatures_give_celerys_results(start_celery_worker, celery_module):
    start_celery_worker(config("canvas"), module=MODULE)
    tasks = celery_module(config("canvas"), MODULE)
    add, total = tasks.add, tasks.total

    # a chord whose header fails raises the header's own error, as Celery's does, also as a fresh caller's first call
    # on a fresh worker (whose wait saw the body's ChordError before the header's failure)
    script = (
        "from celery import chord\nimport sj_celery_calls as t\ntry:\n"
        "    chord((t.fail.si('in the header'),), t.total.s()).delay().get(timeout=30)\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SUPPORT)}
    fresh = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert fresh.stdout.splitlines()[0] == "ValueError in the header", fresh.stdout + fresh.stderr

    assert chain(add.s(1, 2), add.s(10), add.si(100, 1)).delay().get(timeout=30) == 101
    assert (add.s(1, 1) | add.s(3)).delay().get(timeout=30) == 5
    assert group(add.s(i, i) for i in range(4)).delay().get(timeout=30) == [0, 2, 4, 6]
    assert chord((add.s(i, i) for i in range(4)), total.s()).delay().get(timeout=30) == 12
    assert chain(add.s(1, 1), tasks.train.s()).delay().get(timeout=30)["epochs"] == 2  # a command task in a chain
    assert add.map([]).delay().get(timeout=30) == []
    assert add.starmap([(1, 2), (3, 4)]).delay().get(timeout=30) == [3, 7]
    assert add.chunks([(i, i) for i in range(4)], 2).delay().get(timeout=30) == [[0, 2], [4, 6]]
    # and an error propagates as in Celery: a chain raises its failed task's exception, its later links fail with it
    failed = chain(add.s(1, 1), tasks.fail.si("in the middle"), add.s(5)).delay()
    with pytest.raises(ValueError, match="in the middle"):
        failed.get(timeout=30)
    assert failed.parent.parent.get(timeout=30) == 2  # (.get() raises once a parent failed: the last may lag)
    wait_until(lambda: failed.state == states.FAILURE, 10, "the chain's last link was never failed with it")


def test_revoke_terminate_stops_a_running_command_call_and_its_process(
    tmp_path, start_celery_worker, celery_module, celery_cli
):
    # given a command task running in its process, and another queued behind it (one command slot)
    worker = start_celery_worker(config("revokes"), module=MODULE)
    tasks = celery_module(config("revokes"), MODULE)
    running = tasks.train.delay(until=str(tmp_path / "never"))
    wait_until(lambda: running.state == states.STARTED and worker.call_processes(), 30, "it never started")
    queued = tasks.train.delay(until=str(tmp_path / "never"))

    # when both are revoked, the running one with terminate, as Celery's prefork pool would stop it
    queued.revoke()
    running.revoke(terminate=True)

    # then both end REVOKED, its process is gone, and the worker takes the next task
    for result in (queued, running):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=30)
    assert queued.state == running.state == states.REVOKED
    wait_until(lambda: not worker.call_processes(), 15, "the task's process outlived its terminate")
    assert tasks.train.delay(epochs=1).get(timeout=30)["epochs"] == 1
    # and `celery control terminate` does the same
    again = tasks.train.delay(until=str(tmp_path / "never"))
    wait_until(lambda: again.state == states.STARTED, 30, "the third task never started")
    terminated = celery_cli(config("revokes"), "control", "terminate", "TERM", again.id, module=MODULE)
    assert terminated.returncode == 0, terminated.stderr
    with pytest.raises(TaskRevokedError):
        again.get(timeout=30)
    wait_until(lambda: not worker.call_processes(), 15, "the task's process outlived `control terminate`")


def test_a_request_reaches_a_shared_task_with_its_body(start_celery_worker, client_for):
    # given a worker of the tasks module, whose `total` is a @shared_task (no Job record of it)
    start_celery_worker(config("reqshared"), module=MODULE)
    client = client_for("reqshared")

    # when a queue-service request names it
    _, index = client.put(b"abc", {"task": "total"})

    # then the request calls it with its body, as it calls a @job.task: sum(b"abc")
    entry = client.result(index, timeout=30)
    assert (entry.type, json.loads(entry.data) if entry.type == "result" else entry.data) == ("result", 294)


def test_a_celery_call_whose_arguments_have_a_requests_shape_gets_its_arguments(start_celery_worker, celery_module):
    # given a worker of the tasks module, whose `store` takes bytes and a dict: a queue-service request's shape
    start_celery_worker(config("callshape"), module=MODULE)
    tasks = celery_module(config("callshape"), MODULE)

    # when it is called the Celery way, then it runs on its own arguments (not as a request of body b"abc")
    assert tasks.store.delay(b"abc", {"k": "v"}).get(timeout=30) == "3 bytes, [('k', 'v')]"
