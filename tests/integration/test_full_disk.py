"""A full disk (issue 28, item 4): the data folder on a small tmpfs that fills up, so that Redis can no longer append
to its file and refuses every write (MISCONF). Each part says so in words, workers wait it out, `up` stops within a
bound and never leaves a Redis running unrecorded, and nothing acknowledged is lost."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from full_disk import SmallDisk, kill_redis_servers_in, refuse_writes, small_disk

from conftest import CLI, REPO, WorkerProcess, launch_worker, python_command, service_config, wait_until
from scalablejob import JobClient, RequestStatus
from scalablejob.local.redis_server import RedisServer
from scalablejob.model.errors import BrokerRefused
from scalablejob.store.broker import BROKER_ENV, DATA_DIR_ENV
from scalablejob.store.outage import is_outage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SERVICE = "full"
STOP_BOUND_S = 40.0  # up's stop on a full disk: the scaler gives up the bookkeeping Redis refuses after 10 s


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk") as mounted:
        try:
            yield mounted
        finally:
            kill_redis_servers_in(mounted.path / "data" / "redis")


def clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in (BROKER_ENV, DATA_DIR_ENV)}


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / f"{SERVICE}.json"
    path.write_text(json.dumps({**service_config(SERVICE), "autoscaler": {"min": 1, "max": 1}}))
    return path


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=clean_env(), capture_output=True, text=True, timeout=timeout)


def one_error_line(run: subprocess.CompletedProcess[str]) -> str:
    """The single line a command that failed cleanly prints: no traceback, nothing else."""
    assert "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
    return lines[0]


# --- the client and the workers ----------------------------------------------------------------------------------


def test_a_put_refused_by_a_full_disk_raises_broker_refused_naming_the_full_disk(disk):
    # given a Redis whose disk is full, refusing writes
    with RedisServer(disk.path / "redis", persistent=True) as server:
        raw = redis.Redis.from_url(server.url)
        disk.fill()
        refuse_writes(raw)
        keys_before = raw.dbsize()

        # when a client puts a request
        with JobClient(SERVICE, server.url) as jobs, pytest.raises(BrokerRefused) as refused:
            jobs.put(b"hello", {"taskType": "query"})

        # then the error is ours and says why, and nothing was written
        message = str(refused.value)
        assert message.startswith("could not enqueue request ") and f" on {SERVICE}: " in message
        assert (
            "the broker cannot persist its data: its disk is full (MISCONF Errors writing to the AOF file: " in message
        )
        assert raw.dbsize() == keys_before
        # and Redis' own words came from inside the put's Lua script: a refusal that a worker's writes wait out
        cause = refused.value.__cause__
        assert isinstance(cause, redis.ResponseError) and "script" in str(cause) and is_outage(cause)


def start_worker(config: Path, url: str, name: str, tmp_path: Path) -> WorkerProcess:
    argv = [*CLI, "worker", str(config), "--broker", url, "-n", f"{name}@test",
            "--app", str(REPO / "tests/support/sj_test_handlers.py")]  # fmt: skip
    return launch_worker(argv, f"{name}@test", tmp_path / f"{name}.log", cwd=REPO)


def met_the_refusal(worker: WorkerProcess) -> bool:
    if worker.process.poll() is not None:
        pytest.fail(f"worker {worker.hostname} exited {worker.process.returncode} on the full disk:\n{worker.log()}")
    return "MISCONF" in worker.log()


def test_workers_wait_out_a_full_disk_and_finish_their_work_once_it_is_freed(disk, tmp_path):
    # given a worker running a command that waits for the test
    config = write_config(tmp_path)
    release = tmp_path / "release"
    wait_then_print = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.02)\nprint('done')"
    workers: list[WorkerProcess] = []
    with RedisServer(disk.path / "redis", persistent=True) as server, JobClient(SERVICE, server.url) as jobs:
        try:
            workers.append(start_worker(config, server.url, "first", tmp_path))
            workers[0].wait_ready(SERVICE, server.url)
            _, job = jobs.put(python_command(wait_then_print), {"taskType": "command"})
            wait_until(lambda: jobs.state(job).status is RequestStatus.RUNNING, 30, "the command never started")

            # when the disk fills up, a second worker starts meanwhile, and the command ends while it is full
            disk.fill()
            refuse_writes(redis.Redis.from_url(server.url))
            workers.append(start_worker(config, server.url, "second", tmp_path))
            release.touch()
            wait_until(lambda: all(met_the_refusal(worker) for worker in workers), 60, "a worker never met MISCONF")

            # then both wait, and once the disk has room the command's result is written, once
            disk.free()
            result = jobs.result(job, timeout=90)
            assert (result.data, result.tags["exitCode"]) == (b"done\n", "0")
            state = jobs.state(job)
            assert (state.status, state.attempt) == (RequestStatus.DONE, 1)
            # and both workers take new work
            workers[1].wait_ready(SERVICE, server.url, timeout=60)
            _, query = jobs.put(b"after", {"taskType": "query"})
            assert jobs.result(query, timeout=60).data == b"echo:after"
            assert [worker.process.poll() for worker in workers] == [None, None]
        finally:
            for worker in workers:
                worker.stop()
