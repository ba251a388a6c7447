"""Every process a job starts ends with the job, on a real worker: daemons that left the job's session (setsid and a
double fork) are gone once the job's result is written, whether it exited or was cancelled. And a job the kernel's
OOM killer ended says out of memory, not only exit code 137."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, WorkerProcess, launch_worker, python_command, service_config, wait_until
from scalablejob import RequestStatus
from scalablejob.host.job_cgroup import own_bases
from scalablejob.local.scaler_process import is_gone
from scalablejob.model.exits import OOM_KILLS_TAG
from scalablejob.store.cancel import CancelOutcome, cancel_request
from scalablejob.workers.lines import NOTICE_STREAM

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GONE_WITHIN_S = 5.0

# a daemon as a shell makes one: setsid (a new session and process group), then a background child of a shell that
# exits at once, so the daemon's parent is gone and it belongs to no process of the job any more
SHELL_DAEMON = "setsid sh -c 'sleep 1000 >/dev/null 2>&1 </dev/null & echo $! > {pid_file}'"

# the classic double fork of a Python daemon: fork, setsid, fork again, the middle process exits
PYTHON_DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open({pid_file!r}, "w") as out:
            out.write(str(os.getpid()))
        time.sleep(1000)
    os._exit(0)
os.wait()
print("done")
"""


def daemon_body(kind: str, pid_file: Path, then: str = "echo done") -> str:
    """A job that starts a daemon writing its pid to `pid_file`; a shell job then runs `then`, a Python one prints
    done."""
    if kind == "shell":
        return json.dumps(["sh", "-c", f"{SHELL_DAEMON.format(pid_file=pid_file)}; {then}"])
    return json.dumps([sys.executable, "-c", PYTHON_DAEMON.format(pid_file=str(pid_file))])


def read_pid(pid_file: Path) -> int:
    return int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "the daemon never started"))


@pytest.mark.parametrize("kind", ["shell", "python"])
def test_a_daemon_a_job_leaves_is_gone_once_its_result_is_written(
    kind, tmp_path, start_worker, client_for, leftover_pids
):
    # given a job that starts a daemon in a session of its own and exits
    start_worker({**service_config("train"), "scalable_job": {}})
    client = client_for("train")
    pid_file = tmp_path / "daemon.pid"
    _, request_id = client.put(daemon_body(kind, pid_file), {"taskType": "command"})

    # when its result is written
    result = client.result(request_id, timeout=30)
    leftover_pids.append(pid := read_pid(pid_file))

    # then the job succeeded and its daemon is gone
    assert (result.tags["exitCode"], result.data) == ("0", b"done\n")
    wait_until(lambda: is_gone(pid), GONE_WITHIN_S, f"the job's daemon (pid {pid}) outlived the job")


def test_a_daemon_of_a_cancelled_job_is_gone_once_its_result_is_written(
    tmp_path, start_worker, client_for, redis_client, leftover_pids
):
    # given a running job that started a daemon and works on
    start_worker({**service_config("train"), "scalable_job": {"cancel_grace_seconds": 5}})
    client = client_for("train")
    pid_file = tmp_path / "daemon.pid"
    _, request_id = client.put(daemon_body("shell", pid_file, then="exec sleep 1000"), {"taskType": "command"})
    leftover_pids.append(pid := read_pid(pid_file))

    # when it is cancelled
    assert cancel_request(redis_client, "train", request_id) is CancelOutcome.STOPPING
    result = client.result(request_id, timeout=30)

    # then it ended cancelled and its daemon is gone too
    assert client.state(request_id).status is RequestStatus.CANCELLED
    assert result.tags["stopped"] == "cancelled"
    wait_until(lambda: is_gone(pid), GONE_WITHIN_S, f"the cancelled job's daemon (pid {pid}) outlived the job")


MEMORY_LIMIT = 256 << 20  # the worker's cgroup's: a job that fills memory is killed by the OOM killer well before
GROW_UNTIL_KILLED = "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 << 20))"  # written, so really used


def limited_cgroup(base: Path | None, limit: str, swap_limit: str, swap: str) -> Path | None:
    """A new cgroup under `base` with MEMORY_LIMIT in its file `limit` (and `swap` in `swap_limit`, where swap is
    accounted), or None where none can be made."""
    if base is None:
        return None
    folder = base / f"scalablejob-test-{uuid.uuid4().hex}"
    try:
        folder.mkdir()
    except OSError:
        return None
    try:
        (folder / limit).write_text(str(MEMORY_LIMIT))
    except OSError:  # no memory controller in this cgroup
        folder.rmdir()
        return None
    with contextlib.suppress(OSError):
        (folder / swap_limit).write_text(swap)
    return folder


def remove_cgroup(folder: Path) -> None:
    """Kill what is left in a test's cgroup and remove it, once its killed processes have exited."""

    def removed() -> bool:
        with contextlib.suppress(OSError):
            for pid in (folder / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            folder.rmdir()
        return not folder.exists()

    wait_until(removed, 10, f"the test's cgroup {folder} would not empty")


@pytest.fixture
def memory_limited_cgroup() -> Iterator[Path]:
    """A cgroup of this test with a memory limit and no swap, to start a worker in: v1's memory controller on a
    hybrid host, else v2's; skipped where neither can be made (not root, a read-only mount)."""
    bases = own_bases()
    folder = limited_cgroup(
        bases.memory, "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", str(MEMORY_LIMIT)
    ) or limited_cgroup(bases.unified, "memory.max", "memory.swap.max", "0")
    if folder is None:
        pytest.skip("no memory-limited cgroup can be made here")
    yield folder
    remove_cgroup(folder)


@pytest.fixture
def worker_in(tmp_path, redis_url) -> Iterator:
    """Start a real worker in a given cgroup (a shell moves itself there, then becomes the worker)."""
    workers: list[WorkerProcess] = []

    def start(folder: Path, config: dict) -> WorkerProcess:
        service = config["metadata"]["name"]
        config_path = tmp_path / f"{service}.json"
        config_path.write_text(json.dumps(config))
        hostname = f"{service}-limited@test"
        argv = [sys.executable, "-m", "scalablejob", "worker", str(config_path), "--broker", redis_url, "-n", hostname]
        enter = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        worker = launch_worker(["sh", "-c", enter, str(folder), *argv], hostname, tmp_path / "worker.log", cwd=REPO)
        workers.append(worker)
        worker.wait_ready(service, redis_url)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def test_a_job_the_oom_killer_ends_says_out_of_memory(memory_limited_cgroup, worker_in, client_for):
    # given a worker in a cgroup of 256 MiB
    worker_in(memory_limited_cgroup, {**service_config("train"), "scalable_job": {}})
    client = client_for("train")

    # when a job fills memory until the kernel's OOM killer kills it
    _, request_id = client.put(python_command(GROW_UNTIL_KILLED), {"taskType": "command"})
    result = client.result(request_id, timeout=60)

    # then it failed with exit code 137, and says out of memory: for sure with a memory cgroup of its own (its OOM
    # counter; a v1 memory one on a hybrid host), probably without (the host's counter; the job's v2 cgroup has no
    # memory controller under a worker's cgroup that holds processes)
    state = client.state(request_id)
    assert (state.status, state.exit_code, result.tags["exitCode"]) == (RequestStatus.FAILED, 137, "137")
    if own_bases().memory is not None:
        assert state.error == "command killed by the kernel's OOM killer (out of memory; exit code 137)"
        assert result.tags[OOM_KILLS_TAG] == "1"
        notices = [e.data for e in client.logs(request_id) if e.type == "log" and e.tags.get("stream") == NOTICE_STREAM]
        assert notices == [b"the kernel's OOM killer killed 1 process of this job (out of memory)"]
    else:
        assert state.error is not None and state.error.endswith("probably out of memory")
