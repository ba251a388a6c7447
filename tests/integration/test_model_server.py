"""Query tasks forwarded to a local HTTP model server that the worker starts once."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from conftest import REPO, service_config, wait_until
from scalablejob import RequestStatus
from scalablejob.local.ports import free_port
from scalablejob.store.queues import queue_depth
from scalablejob.workers.service import EXIT_MODEL_SERVER_DIED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def model_server_config(pid_file: Path, max_sleep: float = 60) -> dict:
    port = free_port()
    command = (
        f"python {REPO / 'examples' / 'echo_server.py'} --port {port} --pid-file {pid_file} --max-sleep {max_sleep}"
    )
    return {**service_config("echo"), "containers": [{"image": "local/echo", "command": command, "port": port}]}


def test_queries_are_forwarded_to_the_model_server(tmp_path, start_worker, client_for):
    pid_file = tmp_path / "server.pid"
    start_worker(model_server_config(pid_file), app=None)
    client = client_for("echo")

    _, request_id = client.put(b"hello model", {"taskType": "query"})
    answer = json.loads(client.result(request_id, timeout=30).data)

    assert answer["input"] == "hello model"
    assert answer["pid"] == int(pid_file.read_text())
    assert client.state(request_id).status is RequestStatus.DONE


def test_a_dead_model_server_stops_the_worker_and_its_query_goes_back_on_the_queue(
    tmp_path, start_worker, client_for, redis_client
):
    # given a worker whose model server is answering a slow query
    pid_file = tmp_path / "server.pid"
    worker = start_worker(model_server_config(pid_file), app=None)
    client = client_for("echo")
    _, request_id = client.put(b'{"sleep": 30}', {"taskType": "query"})
    wait_until(lambda: client.state(request_id).status is RequestStatus.RUNNING, 20, "the query never started")

    # when the model server dies
    os.kill(int(pid_file.read_text()), signal.SIGKILL)

    # then the worker exits with a clear message and the query is queued again, not lost
    assert worker.process.wait(30) == EXIT_MODEL_SERVER_DIED
    assert "model server" in worker.log() and "exited with code" in worker.log()
    state = client.state(request_id)
    assert (state.status, state.retries) == (RequestStatus.QUEUED, 1)
    assert "died" in state.message
    assert queue_depth(redis_client, "echo.query") == 1

    # and a new worker answers it (its server skips the sleep)
    pid_file.unlink()
    start_worker(model_server_config(pid_file, max_sleep=0), app=None)
    assert json.loads(client.result(request_id, timeout=60).data)["input"] == '{"sleep": 30}'
