"""A worker rides out a Redis outage: its running job goes on, its lines are kept and written in order once Redis is
back, the result is written once, and the job is not started again (kombu's restore-on-close is off)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import python_command, service_config, wait_until
from scalablejob import RequestStatus
from scalablejob.local.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

JOB = """
import sys, time
print("start", flush=True)
for step in range(1, 9):
    time.sleep(0.5)
    print(f"step {step}", flush=True)
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis that keeps its data across a restart (append-only file), as the embedded broker does."""
    with RedisServer(tmp_path / "redis", persistent=True) as server:
        yield server


def test_a_command_running_across_a_redis_restart_finishes_once_with_every_line(
    redis_server, start_worker, client_for, tmp_path
):
    # given a worker running a 4 s command that prints a line every 0.5 s
    worker = start_worker(service_config("outage"))
    client = client_for("outage")
    _, request_id = client.put(python_command(JOB), {"taskType": "command"})
    wait_until(lambda: any(e.data == b"step 1" for e in client.read_sink()), 30, "the job's first step")

    # when Redis goes away (long enough for the worker to notice) and comes back on the same port with its data
    redis_server.stop()
    wait_until(lambda: "Connection to broker lost" in worker.log(), 30, "the worker noticing the outage")
    redis_server.start()

    # then the job ends done, once: one start line, every step in order, one final entry; the worker lives on
    entry = client.result(request_id, timeout=60)
    assert entry.tags["exitCode"] == "0"
    entries = [e for e in client.read_sink(1, 1000) if e.request_id == request_id]
    lines = [e.data for e in entries if e.type == "log"]
    assert lines == [b"start", *(f"step {n}".encode() for n in range(1, 9))]
    assert sum(1 for e in entries if e.is_final) == 1
    state = client.state(request_id)
    assert state is not None and state.status is RequestStatus.DONE and state.attempt == 1
    assert worker.process.poll() is None, worker.log()
    _, after = client.put(b"after", {"taskType": "query"})
    assert client.result(after, timeout=30).data == b"echo:after"


def test_a_command_that_ends_while_redis_is_frozen_is_written_once_redis_thaws_and_never_run_again(
    redis_server, start_worker, client_for, tmp_path
):
    # given a worker running a command that counts its runs and prints a few lines
    runs, ended = tmp_path / "runs", tmp_path / "ended"
    job = (
        f"import pathlib, time\nruns = pathlib.Path({str(runs)!r})\n"
        "runs.write_text((runs.read_text() if runs.exists() else '') + 'run\\n')\n"
        "print('start', flush=True)\n"
        "for step in range(1, 5):\n    time.sleep(0.3)\n    print(f'step {step}', flush=True)\n"
        f"pathlib.Path({str(ended)!r}).touch()\n"
    )
    worker = start_worker(service_config("frozen"))
    client = client_for("frozen")
    _, request_id = client.put(python_command(job), {"taskType": "command"})
    wait_until(lambda: any(e.data == b"start" for e in client.read_sink()), 30, "the job's first line")

    # when Redis freezes (SIGSTOP: no error, no answer) and the job ends meanwhile, and Redis stays frozen a while
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        wait_until(ended.exists, 30, "the job ending while Redis is frozen")
        time.sleep(2)  # the outage goes on after the job's end: the result has to wait for it
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)

    # then its result and every line arrive once Redis thaws, and it ran once
    entry = client.result(request_id, timeout=60)
    assert entry.tags["exitCode"] == "0"
    lines = [e.data for e in client.read_sink(1, 1000) if e.request_id == request_id and e.type == "log"]
    assert lines == [b"start", *(f"step {n}".encode() for n in range(1, 5))]
    assert runs.read_text() == "run\n"
    assert client.state(request_id).attempt == 1
    assert worker.process.poll() is None, worker.log()
