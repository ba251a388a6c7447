"""The embedded Redis of an `up` fails (issue 28, item 2): killed, `up` starts it again and the stack goes on with its
queued work; killed or frozen, `status` says in one line what runs, what does not answer and what to do."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from conftest import CLI, UpProcess, python_command, service_config, wait_until
from scalablejob import JobClient, RequestStatus
from scalablejob.local.redis_server import servers_in
from scalablejob.store.broker import BROKER_ENV, DATA_DIR_ENV, embedded_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVICE = "faults"


def clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in (BROKER_ENV, DATA_DIR_ENV)}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=clean_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpProcess]:
    """A stack with one worker; killed with everything it started if the test did not stop it."""
    config = tmp_path / f"{SERVICE}.json"
    config.write_text(json.dumps({**service_config(SERVICE), "autoscaler": {"min": 1, "max": 1}}))
    stack = UpProcess(config, tmp_path / "data", cwd=tmp_path, env=clean_env())
    try:
        yield stack
    finally:
        if stack.process.poll() is None:
            with contextlib.suppress(psutil.Error):
                for process in [*stack.descendants(), psutil.Process(stack.process.pid)]:
                    process.resume()  # a test that froze something and failed
                stack.kill()
            stack.process.wait(30)
        for server in servers_in(stack.data_dir / "redis"):  # whatever the test or up left, even when it failed
            with contextlib.suppress(psutil.Error):
                server.kill()


def redis_pid(data: Path) -> int:
    return int(embedded_record(data)["pid"])  # type: ignore[call-overload]


def answers(url: str) -> bool:
    with contextlib.suppress(redis.RedisError), redis.Redis.from_url(url, socket_timeout=1) as client:
        return bool(client.ping())
    return False


def test_up_restarts_its_redis_after_kill_9_and_the_stack_goes_on_with_the_queued_work(up, tmp_path):
    # given a stack whose worker runs a command that waits for the test, with another command queued behind it
    where = up.wait_ready()
    release = tmp_path / "release"
    wait_then_print = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.02)\nprint('first')"
    with JobClient(SERVICE, where["broker"]) as jobs:
        _, running = jobs.put(python_command(wait_then_print), {"taskType": "command"})
        wait_until(lambda: jobs.state(running).status is RequestStatus.RUNNING, 60, "the first command never started")
        _, queued = jobs.put(python_command("print('second')"), {"taskType": "command"})
    killed = redis_pid(up.data_dir)

    # when its Redis is killed with kill -9
    os.kill(killed, signal.SIGKILL)

    # then up says so and starts it again, on the same port with the same password and data
    wait_until(lambda: redis_pid(up.data_dir) != killed and answers(where["broker"]), 30, "Redis never came back")
    assert any(f"redis-server (pid {killed}) exited killed by SIGKILL: restarting it" in line for line in up.lines)
    # and the stack goes on: the running command finishes once, and the queued one runs after it
    release.touch()
    with JobClient(SERVICE, where["broker"]) as jobs:
        assert jobs.result(running, timeout=60).data == b"first\n"
        assert jobs.result(queued, timeout=60).data == b"second\n"
        assert jobs.state(running).attempt == 1
    assert up.interrupt() == 0


@pytest.mark.parametrize("fault", ["stopped", "killed"])
def test_status_says_in_one_line_that_the_redis_of_a_running_up_does_not_answer(up, fault):
    # given a stack whose Redis is frozen (SIGSTOP), or killed while up itself is frozen (so it cannot restart it)
    up.wait_ready()
    server = redis_pid(up.data_dir)
    frozen = [server] if fault == "stopped" else [up.process.pid]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        if fault == "killed":
            os.kill(server, signal.SIGKILL)
            wait_until(lambda: not psutil.pid_exists(server) or psutil.Process(server).status() == "zombie", 10,
                       "the killed Redis is still there")  # fmt: skip

        # when status asks for the service
        status = run_cli("status", "-s", SERVICE, "--data-dir", str(up.data_dir))
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)

    # then it answers one line, without a traceback, saying that up runs, its Redis does not answer, and what to do
    assert status.returncode == 1 and status.stdout == ""
    assert "Traceback" not in status.stderr
    [line] = status.stderr.strip().splitlines()
    assert line.startswith(f"Error: scalablejob up (pid {up.process.pid}, ports ") and f"runs in {up.data_dir}" in line
    assert "its Redis (redis://127.0.0.1:" in line and f"pid {server}) does not answer" in line
    assert f"`scalablejob down --data-dir {up.data_dir}`" in line and "start `scalablejob up`" not in line
    assert up.interrupt() == 0, "\n".join(up.lines)
    # and a stop that lands while up starts its Redis again leaves no Redis behind
    assert servers_in(up.data_dir / "redis") == [], "\n".join(up.lines)
