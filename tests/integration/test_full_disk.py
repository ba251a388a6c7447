"""A full disk (issue 28, item 4): the data folder on a small tmpfs that fills up, so that Redis can no longer append
to its file and refuses every write (MISCONF). Each part says so in words, workers wait it out, `up` stops within a
bound and never leaves a Redis running unrecorded, and nothing acknowledged is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from full_disk import SmallDisk, kill_redis_servers_in, redis_servers_in, refuse_writes, small_disk

from conftest import CLI, REPO, UpProcess, WorkerProcess, launch_worker, python_command, service_config, wait_until
from scalablejob import JobClient, RequestStatus
from scalablejob.local.embedded_broker import EmbeddedBroker
from scalablejob.local.ports import free_port
from scalablejob.local.redis_server import RedisServer
from scalablejob.model.errors import BrokerRefused
from scalablejob.store.broker import BROKER_ENV, DATA_DIR_ENV
from scalablejob.store.outage import is_outage
from scalablejob.store.presence import read_presence

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


# --- up and down ---------------------------------------------------------------------------------------------------


def up_argv(config: Path, data: Path) -> list[str]:
    ports = ("--port", str(free_port()), "--flower-port", str(free_port()), "--metrics-port", str(free_port()))
    return [*CLI, "up", str(config), "--data-dir", str(data), *ports]


@pytest.mark.parametrize("free_pages", [0, 1], ids=["no-room-for-its-own-record", "no-room-for-redis-record"])
def test_up_on_a_full_disk_refuses_in_one_line_and_leaves_no_redis_running(disk, tmp_path, free_pages):
    # given a data folder that an earlier stack used (its password, its Redis file), on a disk now full
    data = disk.path / "data"
    earlier = EmbeddedBroker(data)
    earlier.start()
    earlier.stop()
    disk.fill(free_pages)

    # when up starts on it
    up = subprocess.run(up_argv(write_config(tmp_path), data), cwd=tmp_path, env=clean_env(), capture_output=True,
                        text=True, timeout=60)  # fmt: skip

    # then it says in one line that the disk is full, and leaves no Redis running
    assert up.returncode == 1
    line = one_error_line(up)
    assert "No space left on device" in line and str(data) in line
    assert redis_servers_in(data / "redis") == []


def test_up_stops_on_a_full_disk_within_a_bound_and_loses_nothing_acknowledged(disk, tmp_path):
    # given a stack with a worker, on a disk that fills while requests are put (for a service nobody serves, so they
    # stay queued), until Redis refuses them
    data = disk.path / "data"
    up = UpProcess(write_config(tmp_path), data, cwd=tmp_path, env=clean_env())
    try:
        where = up.wait_ready()
        raw = redis.Redis.from_url(where["broker"])
        wait_until(lambda: read_presence(raw, SERVICE), 60, "the worker never started")
        acknowledged: list[str] = []
        with JobClient("elsewhere", where["broker"]) as jobs:
            disk.fill(leave_pages=16)
            with pytest.raises(BrokerRefused):
                for _ in range(1000):
                    acknowledged.append(jobs.put(b"b" * 8192, {"taskType": "query"})[1])

        # when up is asked to stop
        asked = time.monotonic()
        up.process.send_signal(signal.SIGINT)

        # then it stops within the bound, and says what it left running and what to do, if anything
        status = up.process.wait(STOP_BOUND_S)
        output = "\n".join(up.lines)
        assert "Traceback" not in output
        assert status == 0 or (status == 1 and "stopped, except Redis" in up.lines[-1]), output[-3000:]
        print(f"{len(acknowledged)} puts acknowledged; up stopped {time.monotonic() - asked:.1f} s after SIGINT, exit "
              f"status {status}")  # fmt: skip

        # and once the disk has room, down stops whatever is left, and every acknowledged request is there
        disk.free()
        down = run_cli("down", "--data-dir", str(data))
        assert down.returncode == 0, down.stderr
        assert redis_servers_in(data / "redis") == []
        broker = EmbeddedBroker(data)
        with JobClient("elsewhere", broker.start()) as jobs:
            missing = [request_id for request_id in acknowledged if jobs.state(request_id) is None]
        broker.stop()
        assert acknowledged and missing == []
    finally:
        if up.process.poll() is None:
            up.kill()


def test_down_stops_a_redis_of_the_folder_that_no_record_names(tmp_path):
    # given a redis-server working in a data folder that records no broker (as a crash before its record leaves it)
    data = tmp_path / "data"
    server = RedisServer(data / "redis", persistent=True)
    server.start()
    try:
        redis.Redis.from_url(server.url).set("kept", "yes")

        # when down runs on that folder
        down = run_cli("down", "--data-dir", str(data))

        # then it finds and stops that Redis, which keeps its data
        assert down.returncode == 0, down.stderr
        assert f"stopped a redis-server of {data} that no record named (pid {server.pid})" in down.stdout
        wait_until(lambda: server.exit_status is not None, 15, "the unrecorded redis-server still runs")
    finally:
        server.stop()
    with RedisServer(data / "redis", persistent=True) as restarted:
        assert redis.Redis.from_url(restarted.url).get("kept") == b"yes"


def test_a_redis_holding_writes_not_on_disk_is_left_running_until_down_can_stop_it_without_loss(disk):
    # given the embedded Redis of a folder that acknowledged a write it could not append to its file (disk full)
    data = disk.path / "data"
    broker = EmbeddedBroker(data)
    raw = redis.Redis.from_url(broker.start())
    disk.fill()
    raw.set("acknowledged", b"a" * (1 << 16))
    wait_until(lambda: raw.info("persistence")["aof_last_write_status"] == "err", 10, "the write did not fail")

    # when its `up` stops it, and `down` tries, while the disk is full
    left = broker.stop(unsaved_wait_s=1)
    down = run_cli("down", "--data-dir", str(data))

    # then neither stops it, and `down` says why in one line
    assert left is not None and "left running" in left and "not on disk yet" in left
    assert down.returncode == 1
    assert "stopping it now would lose them" in one_error_line(down)
    assert broker.server.exit_status is None

    # when the disk has room again, then `down` stops it, and the write is in its file
    disk.free()
    down = run_cli("down", "--data-dir", str(data))
    assert down.returncode == 0, down.stderr
    assert f"stopped the redis-server left running in {data}" in down.stdout
    with RedisServer(data / "redis", persistent=True, password=broker.server.password) as restarted:
        assert redis.Redis.from_url(restarted.url).get("acknowledged") == b"a" * (1 << 16)
