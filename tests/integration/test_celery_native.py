"""Celery-native use: `celery -A module worker` is a scalablejob worker, `.delay().get()` and `revoke()` go through
the queue service, named tasks are routed by their tag, and Celery's own tools (inspect, status) see them."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import psutil
import pytest
from celery import states
from celery.exceptions import TaskRevokedError

from conftest import python_command, service_config, wait_until
from scalablejob import RequestError, RequestStatus
from scalablejob.frontend.app import FrontEndService, create_app
from scalablejob.frontend.binding import bind
from scalablejob.frontend.server import ServerThread
from scalablejob.model import keys
from scalablejob.model.config import parse_config
from scalablejob.model.routing import TaskType, queue_for
from scalablejob.store.queues import queue_depth

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
pytest_plugins = ["celery_fixtures"]

SERVICE = "native"
TOKEN = "native-token"


def config(name: str = SERVICE, **metadata: object) -> dict[str, object]:
    return service_config(name, **{"rpc.worker_threads": 2, **metadata})


def training_processes(request_id: str) -> list[psutil.Process]:
    """The child processes running a training request (they carry its id in their environment)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "scalablejob.workers.task_child" in (process.info["cmdline"] or []) and (
                process.environ().get("SCALABLEJOB_REQUEST_ID") == request_id
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_delay_get_returns_a_query_tasks_value_and_a_training_tasks_result(start_celery_worker, celery_job, client_for):
    # given a worker started the Celery way, and the same user code here
    start_celery_worker(config())
    job = celery_job(config())
    shout, train = job.tasks["shout"], job.tasks["train"]

    # when a query task and a training task written for requests (body, ctx) are called with .delay()
    answer = shout.delay("hello world")
    trained = train.delay({})

    # then .get() gives back the query's value and the training task's return value, and the states say so
    assert answer.get(timeout=30) == "HELLO WORLD"
    assert trained.get(timeout=30) == {"loss": 0.125, "request": trained.id}
    assert answer.state == trained.state == states.SUCCESS
    # and the same training task, sent as a queue-service request, streams its prints and progress to the output
    # queue like a command's
    client = client_for(SERVICE)
    _, request_id = client.put(b"{}", {"task": "train"})
    assert json.loads(client.result(request_id, timeout=30).data) == {"loss": 0.125, "request": request_id}
    entries = list(client.logs(request_id))
    assert [entry.data for entry in entries if entry.type == "log"] == [b"training started"]
    assert [entry.tags["progress"] for entry in entries if entry.type == "progress"] == ["0.5000"]
    assert client.state(request_id).status is RequestStatus.DONE


def test_a_failing_task_raises_its_exception_with_its_message_on_get(start_celery_worker, celery_job, client_for):
    start_celery_worker(config())
    job = celery_job(config())

    failed_query = job.tasks["explode"].delay("bad input")
    failed_training = job.tasks["train"].delay({"fail": "diverged at epoch 3"})
    _, failed_request = client_for(SERVICE).put(json.dumps({"fail": "diverged at epoch 3"}), {"task": "train"})

    with pytest.raises(ValueError, match=r"^bad input$"):
        failed_query.get(timeout=30)
    with pytest.raises(RuntimeError, match=r"^diverged at epoch 3$"):
        failed_training.get(timeout=30)
    with pytest.raises(RuntimeError, match=r"^diverged at epoch 3$"):
        job.celery.AsyncResult(failed_request).get(timeout=30)  # a request's id reads the request
    assert failed_query.state == failed_training.state == states.FAILURE
    state = job.client().state(failed_request)
    assert state.exit_code == 1 and state.error == "RuntimeError: diverged at epoch 3"


def test_revoke_cancels_a_running_training_request_and_takes_a_queued_one_off_its_queue(
    tmp_path, start_celery_worker, celery_job, client_for
):
    # given a training request running (its one command slot taken) and a second one queued behind it
    start_celery_worker(config())
    job = celery_job(config())
    client = client_for(SERVICE)
    body = json.dumps({"until": str(tmp_path / "never")})
    running, queued = (job.celery.AsyncResult(client.put(body, {"task": "train"})[1]) for _ in range(2))
    wait_until(lambda: running.state == states.STARTED and training_processes(running.id), 30, "it never started")

    # when both are revoked the Celery way, by their ids
    queued.revoke()
    running.revoke()

    # then both end REVOKED, cancelled as `scalablejob cancel` would, and nothing of the running one is left
    for result in (queued, running):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=30)
        assert result.state == states.REVOKED
    assert job.client().state(queued.id).error == "cancelled before it started"
    assert job.client().state(running.id).error == "cancelled while running"
    wait_until(lambda: not training_processes(running.id), 10, "the training process outlived its cancel")


def test_celery_control_revoke_stops_a_running_request(tmp_path, start_celery_worker, celery_cli, client_for):
    # given a training request running on a worker started the Celery way
    start_celery_worker(config())
    client = client_for(SERVICE)
    _, request_id = client.put(json.dumps({"until": str(tmp_path / "never")}), {"task": "train"})
    wait_until(lambda: training_processes(request_id), 30, "it never started")

    # when it is revoked from the command line
    revoked = celery_cli(config(), "control", "revoke", request_id)

    # then the request ends cancelled, and its process is gone
    assert revoked.returncode == 0, revoked.stderr
    wait_until(lambda: client.state(request_id).status is RequestStatus.CANCELLED, 30, "it was never cancelled")
    wait_until(lambda: not training_processes(request_id), 10, "the training process outlived its revoke")


def test_two_named_tasks_on_one_service_are_routed_by_their_tag(
    start_celery_worker, client_for, redis_client, redis_url
):
    start_celery_worker(config())
    client = client_for(SERVICE)

    _, shouted = client.put(b"two words", {"task": "shout"})
    _, counted = client.put(b"two words", {"task": "count"})
    submitted = subprocess.run(
        [sys.executable, "-m", "scalablejob", "submit", "one two three", "--service", SERVICE, "-t", "task=count",
         "--wait", "--timeout", "30", "--broker", redis_url],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert client.result(shouted, timeout=30).data == b"TWO WORDS"
    counted_entry = client.result(counted, timeout=30)
    assert json.loads(counted_entry.data) == {"words": 2} and counted_entry.tags["resultEncoding"] == "json"
    assert submitted.returncode == 0 and submitted.stdout.splitlines()[1] == '{"words": 3}', submitted.stderr
    # and a query without a tag cannot pick one of several query tasks: refused, nothing enqueued
    with pytest.raises(RequestError, match=r"several query tasks \(count, explode, shout\).*task=NAME"):
        client.put(b"which one?", {"taskType": "query"})
    assert queue_depth(redis_client, queue_for(SERVICE, TaskType.QUERY)) == 0


def test_over_http_an_unknown_task_is_a_400_naming_the_known_ones_and_nothing_is_enqueued(
    start_celery_worker, redis_url, redis_client
):
    # given a worker that registered its tasks, and the queue service's front end
    start_celery_worker(config())
    service_config_ = parse_config(config())
    front_ends = bind(redis_client, service_config_, (), TOKEN)
    server = ServerThread(create_app(FrontEndService(front_ends, redis_url))).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": TOKEN}, timeout=30) as http:
            # when a request names a task the service does not have
            refused = http.post(f"/api/predict/{SERVICE}", params={"task": "shuot"}, content=b"hi")
            # and another names one it has
            put = http.post(f"/api/predict/{SERVICE}", params={"task": "shout"}, content=b"hi")
    finally:
        server.stop()

    # then the first is a 400 that names the known tasks, and nothing of it was enqueued
    assert refused.status_code == 400
    assert "unknown task 'shuot' for service native: expected one of count, explode, shout, train" in refused.text
    assert put.status_code == 200 and put.text == "1"  # the refused one drew no index
    assert len(list(redis_client.scan_iter(match=keys.request_state(SERVICE, "*"), count=1000))) == 1


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["-Q", "other"], "-Q/--queues other: a scalablejob worker consumes exactly its service's queues"),
        (["--autoscale=4,1"], "--autoscale: Celery's autoscale resizes one worker's pool"),
        (["-P", "prefork"], "-P/--pool prefork: a scalablejob worker runs the threads pool"),
        (["--prefetch-multiplier=4"], "--prefetch-multiplier 4: idle first needs 1"),
    ],
    ids=["queues", "autoscale", "pool", "prefetch"],
)
def test_a_refused_option_exits_non_zero_with_its_reason(celery_cli, options, reason):
    run = celery_cli(config(), "worker", *options)

    assert run.returncode == 2, run.stdout + run.stderr
    assert f"Error: {reason}" in run.stderr.splitlines()[-1]


def test_scalablejob_worker_refuses_the_same_options(tmp_path, redis_url):
    path = tmp_path / "native.json"
    path.write_text(json.dumps(config()))

    run = subprocess.run(
        [sys.executable, "-m", "scalablejob", "worker", str(path), "--broker", redis_url, "--", "-Q", "other"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert run.returncode == 2
    assert "Error: -Q/--queues other: a scalablejob worker consumes exactly" in run.stderr.splitlines()[-1]


def test_celery_inspect_and_status_see_the_worker_and_its_tasks(tmp_path, start_celery_worker, celery_cli, celery_job):
    # given a worker started the Celery way, running a training task
    worker = start_celery_worker(config())
    train = celery_job(config()).tasks["train"].delay({"until": str(tmp_path / "release")})
    wait_until(lambda: train.state == states.STARTED, 30, "the training task never started")

    registered = celery_cli(config(), "inspect", "registered")
    active = celery_cli(config(), "inspect", "active")
    stats = celery_cli(config(), "inspect", "stats")
    status = celery_cli(config(), "status")

    assert registered.returncode == 0, registered.stderr
    for name in ("count", "explode", "shout", "train", "scalablejob.command", "scalablejob.query"):
        assert f"* {name}\n" in registered.stdout
    seen = f"{active.stdout}\nthe task is {train.state}; the worker's log:\n{worker.log()[-3000:]}"
    assert active.returncode == 0 and f"'id': '{train.id}'" in active.stdout and "'name': 'train'" in active.stdout, (
        seen
    )
    assert stats.returncode == 0 and '"max-concurrency": 3' in stats.stdout
    assert status.returncode == 0 and f"{worker.hostname}: OK" in status.stdout and "1 node online" in status.stdout
    (tmp_path / "release").touch()
    assert train.get(timeout=30)["request"] == train.id


def test_a_command_line_still_runs_on_a_celery_started_worker(start_celery_worker, client_for):
    start_celery_worker(config())
    client = client_for(SERVICE)

    _, request_id = client.put(python_command("print('plain command')"), {"taskType": "command"})

    assert client.result(request_id, timeout=30).tags["exitCode"] == "0"
    assert [entry.data for entry in client.logs(request_id) if entry.type == "log"] == [b"plain command"]
