"""Pre-warmed workers (scaler.forkserver): workers forked from a warm parent, with real processes.

The first tests drive the launcher with stand-in entries (a module written per test, no Celery); the others run a
real scaler with SCALABLEJOB_PREWARM=1, a real redis-server and real `scalablejob worker` code forked from the
server. A worker's parent tells how it started: the fork server (forked) or the scaler itself (cold).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis
from test_pool import launchers as pool_launchers  # noqa: F401 - its fixture: kills and reaps what a test started
from test_scaler_processes import running_on, scaled_config, sleeping, wait_for_idle
from test_scaler_processes import start_scaler as scaler_starter  # noqa: F401 - that fixture, here too

from conftest import python_command, wait_until
from scalablejob import RequestStatus
from scalablejob.host.gpus import fake_gpus
from scalablejob.local.scaler_process import ScalerProcess, is_gone
from scalablejob.scaler.forkserver import FORK_SERVER_ENV, PREWARM_ENV, ForkServer, unsafe_to_fork
from scalablejob.scaler.pool import Exited, ProcessLauncher, WorkerSpec
from scalablejob.store.presence import read_presence

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

WORKER_ARGV = [sys.executable, "-m", "scalablejob", "worker", "service.json"]
ENTRIES = """
import json, os, signal, subprocess, sys, threading, time

def warm(args):
    if args == ["threads"]:
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()

def run(args):
    # a stand-in worker: writes what it got, then sleeps until SIGTERM (exit 0) or a kill
    out = os.environ["OUT"]
    if args[-1].startswith("cmd"):  # a command in a session of its own, as a command task runs
        command = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        open(os.path.join(out, "command"), "w").write(str(command.pid))
    with open(os.path.join(out, args[-1] + ".json"), "w") as file:
        seen = {"args": args, "cuda": os.environ["CUDA_VISIBLE_DEVICES"], "name": os.environ["SCALABLEJOB_WORKER_NAME"],
                "sid": os.getsid(0), "pid": os.getpid()}
        file.write(json.dumps(seen))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(1)
"""


@pytest.fixture
def entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module of stand-in entries on the fork server's path; OUT is where the children write."""
    (tmp_path / "forkentries.py").write_text(textwrap.dedent(ENTRIES))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("OUT", str(tmp_path))
    return tmp_path


@pytest.fixture
def stand_in(pool_launchers) -> Callable[..., ProcessLauncher]:  # noqa: F811 - the imported fixture
    """Prewarmed launchers whose fork server runs the stand-in entries (given `args`), warm once their server is."""

    def server(worker_args: list[str]) -> ForkServer:
        return ForkServer.start(worker_args, warm="forkentries:warm", run="forkentries:run")

    def make(*args: str) -> ProcessLauncher:
        launcher = ProcessLauncher([*WORKER_ARGV[:4], *args], "testhost", prewarm=True, fork_server=server)
        pool_launchers.append(launcher)
        return launcher

    return make


def warm(launcher: ProcessLauncher) -> ForkServer:
    server = launcher._server  # noqa: SLF001 - the test drives the step itself
    assert server is not None
    wait_until(lambda: server.ready, 30, "the fork server never got warm")
    return server


def written(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    wait_until(lambda: path.exists() and path.read_text().endswith("}"), 10, f"{name} never ran")
    return json.loads(path.read_text())


def test_a_forked_worker_has_its_own_session_gpus_and_name_and_looks_like_a_worker(stand_in, entries) -> None:
    launcher = stand_in("service.json")
    server = warm(launcher)

    record = launcher.spawn(WorkerSpec("w1@h", fake_gpus(2)))

    seen = written(entries, "w1@h")
    assert seen == {"args": ["service.json", "-n", "w1@h"], "cuda": "GPU-fake-0000,GPU-fake-0001", "name": "w1@h",
                    "sid": record.pid, "pid": record.pid}  # fmt: skip
    process = psutil.Process(record.pid)
    assert process.ppid() == server._process.pid and process.create_time() == record.create_time  # noqa: SLF001 - the test drives the step itself
    assert FORK_SERVER_ENV in process.environ()  # what an adopting scaler checks, with the pid and start time
    fresh = ProcessLauncher(WORKER_ARGV, "testhost")
    assert fresh.adopt(record)
    fresh._adopted.clear()  # noqa: SLF001 - the test drives the step itself


def test_exits_are_reported_with_their_codes_a_warm_stop_as_0_a_kill_as_minus_9(stand_in, entries) -> None:
    launcher = stand_in("service.json")
    warm(launcher)
    launcher.spawn(WorkerSpec("stopped@h"))
    launcher.spawn(WorkerSpec("killed@h"))
    written(entries, "stopped@h"), written(entries, "killed@h")

    launcher.stop("stopped@h")
    launcher.kill("killed@h")

    ended: list[Exited] = []
    wait_until(lambda: ended.extend(launcher.reap()) or len(ended) == 2, 10, f"not both reaped: {ended}")
    assert sorted(ended, key=lambda e: e.name) == [Exited("killed@h", -signal.SIGKILL), Exited("stopped@h", 0)]
    assert launcher.names == []


def test_what_a_dead_forked_worker_started_carries_its_name_and_is_killed(stand_in, entries) -> None:
    launcher = stand_in("service.json")
    warm(launcher)
    record = launcher.spawn(WorkerSpec("cmd@h"))
    written(entries, "cmd@h")
    command = int((entries / "command").read_text())

    os.kill(record.pid, signal.SIGKILL)

    assert wait_until(launcher.reap, 10, "never reaped") == [Exited("cmd@h", -signal.SIGKILL)]
    assert launcher.kill_leftovers("cmd@h") == 1
    wait_until(lambda: is_gone(command), 10, "the command outlived its worker")


def test_a_warm_up_that_starts_a_thread_falls_back_to_a_cold_start_with_a_warning(stand_in, entries, caplog) -> None:
    launcher = stand_in("threads")
    server = launcher._server  # noqa: SLF001 - the test drives the step itself
    assert server is not None

    wait_until(lambda: not server.alive, 30, "the unsafe fork server kept running")

    assert not server.ready
    assert "the user module started 1 thread(s) at import, so forking is unsafe" in caplog.text
    assert "starting workers cold" in caplog.text


def test_closing_the_fork_server_leaves_its_workers_running_and_they_are_still_watched(stand_in, entries) -> None:
    launcher = stand_in("service.json")
    server = warm(launcher)
    record = launcher.spawn(WorkerSpec("orphan@h"))
    written(entries, "orphan@h")

    launcher.close()

    assert is_gone(server._process.pid) and not is_gone(record.pid)  # noqa: SLF001 - the test drives the step itself
    assert launcher.reap() == [] and launcher.names == ["orphan@h"]
    launcher.kill("orphan@h")
    assert wait_until(launcher.reap, 10, "the orphan was never reaped") == [Exited("orphan@h", None)]


def test_this_process_is_safe_to_fork_unless_it_runs_threads() -> None:
    assert unsafe_to_fork() is None or "thread" in str(unsafe_to_fork())  # pytest-timeout may run a thread


# ---- a real scaler with pre-warmed workers ------------------------------------------------------------------------

PREWARM = {PREWARM_ENV: "1"}


@pytest.fixture
def warm_scaler(scaler_starter) -> Callable[..., ScalerProcess]:  # noqa: F811 - the imported fixture
    """Start scalers with pre-warmed workers and no worker yet; each is returned once its fork server reported."""

    def start(name: str, *, max: int = 2, gpu: int = 0, app: Path | None = None) -> ScalerProcess:
        config = scaled_config(name, min=0, max=max, avg=1, grace_s=60, gpu=gpu, instance=0)
        args = ("--app", str(app)) if app else ()
        scaler = scaler_starter(config, *args, env={**PREWARM, "SCALABLEJOB_FAKE_GPUS": "2"})
        wait_until(
            lambda: "fork server" in scaler.log(), 60, lambda: f"the fork server never reported:\n{scaler.log()}"
        )
        return scaler

    return start


def parent_of(redis_client: redis.Redis, service: str, worker: str) -> psutil.Process:
    return psutil.Process(read_presence(redis_client, service)[worker].pid).parent()


def test_a_forked_worker_runs_a_task_pinned_to_its_gpu_under_its_own_name(warm_scaler, client_for, redis_client):
    scaler = warm_scaler("forked", gpu=1)
    assert "is warm" in scaler.log(), scaler.log()
    client = client_for("forked")

    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['SCALABLEJOB_WORKER_NAME'])"
    _, request_id = client.put(python_command(code), {"taskType": "command"})
    entry = client.result(request_id, timeout=30)

    worker = client.state(request_id).worker
    assert entry.data.decode().split() == ["GPU-fake-0000", worker]
    assert parent_of(redis_client, "forked", worker).pid != scaler.process.pid  # forked by the server
    assert f"spawned worker {worker}" in scaler.log()


def test_a_forked_worker_finishes_its_task_on_a_warm_stop_and_nothing_is_left(warm_scaler, client_for, redis_client):
    scaler = warm_scaler("fdrain")
    client = client_for("fdrain")
    _, request_id = client.put(sleeping(2, "print('finished')"), {"taskType": "command"})
    worker = wait_until(lambda: running_on(client, request_id), 30, lambda: f"never started:\n{scaler.log()}")
    server = parent_of(redis_client, "fdrain", worker)
    assert server.pid != scaler.process.pid and FORK_SERVER_ENV in server.environ()
    pid = read_presence(redis_client, "fdrain")[worker].pid

    assert scaler.stop() == 0, scaler.log()

    entry = client.result(request_id, timeout=1)
    assert (entry.data, entry.tags["exitCode"]) == (b"finished\n", "0")
    assert is_gone(pid) and is_gone(server.pid)
    assert f"worker {worker} (pid {pid}) exited with code 0" in scaler.log()


def test_kill_9_of_a_busy_forked_worker_runs_its_task_again_on_a_new_one(warm_scaler, client_for, redis_client):
    scaler = warm_scaler("fcrash", max=1)
    client = client_for("fcrash")
    _, request_id = client.put(sleeping(1, "print('ok')"), {"taskType": "command"})
    victim = wait_until(lambda: running_on(client, request_id), 30, lambda: f"never started:\n{scaler.log()}")

    os.kill(read_presence(redis_client, "fcrash")[victim].pid, signal.SIGKILL)

    entry = client.result(request_id, timeout=30)
    state = client.state(request_id)
    assert (entry.data, state.retries) == (b"ok\n", 1) and state.worker != victim
    assert f"worker {victim}" in scaler.log() and "was killed by signal 9" in scaler.log()


def test_a_user_module_that_starts_a_thread_at_import_gets_cold_workers(
    warm_scaler, client_for, redis_client, tmp_path
):
    app = tmp_path / "threaded_app.py"
    app.write_text(
        "import threading, time\nfrom scalablejob import Job\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\njob = Job()\n"
    )
    scaler = warm_scaler("threaded", app=app)
    client = client_for("threaded")

    _, request_id = client.put(python_command("print('cold')"), {"taskType": "command"})
    assert client.result(request_id, timeout=30).data == b"cold\n"

    warning = "fork server: the user module started 1 thread(s) at import, so forking is unsafe; starting workers cold"
    assert warning in scaler.log()
    assert parent_of(redis_client, "threaded", client.state(request_id).worker).pid == scaler.process.pid


def test_a_restarted_scaler_adopts_forked_workers_and_no_fork_server_outlives_its_scaler(
    warm_scaler, client_for, redis_client
):
    # given two forked workers, idle after a burst of two tasks
    first = warm_scaler("fadopt")
    client = client_for("fadopt")
    ids = [client.put(sleeping(0.5), {"taskType": "command"})[1] for _ in range(2)]
    wait_until(lambda: all(client.state(i).status is RequestStatus.DONE for i in ids), 30, first.log())
    workers = wait_for_idle(first, 2)
    presence = read_presence(redis_client, "fadopt")
    servers = {psutil.Process(presence[name].pid).ppid() for name in workers}
    assert len(servers) == 1 and first.process.pid not in servers  # both forked by the same server

    # when the scaler is killed with SIGKILL: its fork server dies with it, its workers live on
    first.kill()
    wait_until(lambda: is_gone(next(iter(servers))), 10, "the fork server outlived its scaler")
    assert not any(is_gone(presence[name].pid) for name in workers)

    # then a new scaler adopts them, and when it stops, nothing is left: workers and its own fork server
    second = warm_scaler("fadopt")
    assert wait_for_idle(second, 2) == workers
    assert "adopted worker" in second.log() and "spawned worker" not in second.log()
    second_server = [c.pid for c in psutil.Process(second.process.pid).children() if FORK_SERVER_ENV in c.environ()]
    assert len(second_server) == 1
    assert second.stop() == 0, second.log()
    assert all(is_gone(presence[name].pid) for name in workers) and is_gone(second_server[0])
