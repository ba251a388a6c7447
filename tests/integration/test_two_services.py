"""Two services on one machine, each under its own `scalablejob up` with its own data folder, so its own embedded
Redis, scaler, workers and ports: the way to grow past one Redis (issue 26, goal 5). Each service's requests run on
its own workers and touch only its own Redis, and stopping one (`scalablejob down --data-dir`) leaves the other
serving. README's recipe runs both `up`s from one Procfile under one `honcho start`, and so does a test here."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis

from conftest import CLI, READY_LINE, REPO, TEST_HANDLERS, UpProcess, wait_until
from scalablejob import JobClient
from scalablejob.local.ports import free_port
from scalablejob.local.stack_record import STACK_RECORD
from scalablejob.model.keys import KEY_PREFIX
from scalablejob.store.broker import BROKER_ENV, BROKER_RECORD, BROKER_WAIT_ENV, DATA_DIR_ENV, running_embedded
from scalablejob.store.presence import read_presence

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVICES = ("alpha", "beta")
# README's recipe for both services under one Procfile (the bullet "A Procfile whose lines are these `up` commands")
PROCFILE_RECIPE = "honcho start -e /dev/null"


def config(name: str) -> dict[str, object]:
    return {"metadata": {"name": name, "type": "ScalableJob", "gpu": 0, "rpc.worker_threads": 1},
            "autoscaler": {"min": 1, "max": 1}}  # fmt: skip


def start(tmp_path: Path, name: str) -> UpProcess:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config(name)))
    env = {key: value for key, value in os.environ.items() if key not in (BROKER_ENV, DATA_DIR_ENV)}
    return UpProcess(path, tmp_path / name, "--app", str(TEST_HANDLERS), env=env)


def keys_of_services(client: redis.Redis) -> dict[str, set[str]]:
    """Every key in this Redis that belongs to a service, by service: ours (`scalablejob:<service>:...`) and the
    service's queues as kombu names them (`<service>.<task type>`, with its priority lists)."""
    found: dict[str, set[str]] = {}
    for raw in client.scan_iter(count=1000):
        key = raw.decode()
        owner = key.split(":")[1] if key.startswith(f"{KEY_PREFIX}:") else key.split(".")[0] if "." in key else None
        if owner in SERVICES:
            found.setdefault(owner, set()).add(key)
    return found


def test_two_services_on_two_redis_servers_keep_apart_and_one_stops_alone(tmp_path: Path) -> None:
    # given two `up`s side by side, each with its own data folder (so its own embedded Redis) and ports
    ups = {name: start(tmp_path, name) for name in SERVICES}
    try:
        where = {name: up.wait_ready() for name, up in ups.items()}
        clients = {name: redis.Redis.from_url(where[name]["broker"]) for name in SERVICES}
        ports = {name: client.connection_pool.connection_kwargs["port"] for name, client in clients.items()}
        assert ports["alpha"] != ports["beta"]

        # when each service gets a query
        ran_on = {}
        for name in SERVICES:
            with JobClient(name, where[name]["broker"]) as client:
                _, request_id = client.put(f"hello {name}".encode(), {"taskType": "query"})
                assert client.result(request_id, timeout=60).data == f"echo:hello {name}".encode()
                ran_on[name] = client.state(request_id).worker

        # then each ran on its own service's worker, known to its own Redis only
        for name, other in (SERVICES, SERVICES[::-1]):
            workers = read_presence(clients[name], name)
            assert ran_on[name] in workers and ran_on[name].startswith(f"{name}-"), (ran_on, workers)
            assert read_presence(clients[name], other) == {}
            # and each Redis holds its own service's keys and queues, none of the other's
            owners = keys_of_services(clients[name])
            assert set(owners) == {name}, owners

        # when alpha is stopped the documented way
        beta_processes = {process.pid for process in ups["beta"].descendants()}
        down = subprocess.run([*CLI, "down", "--data-dir", str(ups["alpha"].data_dir)], cwd=REPO,
                              capture_output=True, text=True, timeout=90)  # fmt: skip
        assert down.returncode == 0, down.stdout + down.stderr
        assert ups["alpha"].process.wait(60) == 0

        # then alpha's Redis is gone, and beta still serves on the same processes
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=ports["alpha"], socket_connect_timeout=1).ping()
        with JobClient("beta", where["beta"]["broker"]) as client:
            _, request_id = client.put(b"still here", {"taskType": "query"})
            assert client.result(request_id, timeout=60).data == b"echo:still here"
        assert ups["beta"].process.poll() is None
        assert beta_processes <= {process.pid for process in ups["beta"].descendants()}
        assert ups["beta"].interrupt() == 0
    finally:
        for up in ups.values():
            if up.process.poll() is None:
                up.kill()
        wait_until(lambda: all(not _alive(up) for up in ups.values()), 30, "an up outlived the test")


def test_one_procfile_of_two_ups_runs_each_service_on_its_own_redis_and_ctrl_c_stops_every_process(
    tmp_path: Path,
) -> None:
    # given README's Procfile of two `up` lines, each with its own data folder and ports, in a folder whose .env
    # names a broker as this repository's does (one that nothing serves)
    assert f"`{PROCFILE_RECIPE}`" in (REPO / "README.md").read_text(), "README's recipe changed: run the new one"
    folder = tmp_path / "services"
    folder.mkdir()
    lines = []
    for name in SERVICES:
        (folder / f"{name}.json").write_text(json.dumps(config(name)))
        shutil.copy(TEST_HANDLERS, folder / f"{name}.py")
        lines.append(f"{name}: scalablejob up {name}.json --app {name}.py --data-dir .scalablejob-{name} "
                     f"--port {free_port()} --flower-port {free_port()}")  # fmt: skip
    (folder / "Procfile").write_text("\n".join(lines) + "\n")
    (folder / ".env").write_text(f"{BROKER_ENV}=redis://127.0.0.1:{free_port()}/0\n{BROKER_WAIT_ENV}=30\n")
    data_dirs = {name: folder / f".scalablejob-{name}" for name in SERVICES}
    env = {key: value for key, value in os.environ.items() if key not in (BROKER_ENV, DATA_DIR_ENV)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # this venv's honcho and scalablejob
    argv = shlex.split(PROCFILE_RECIPE)
    argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        honcho = subprocess.Popen(argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    processes: list[psutil.Process] = []
    try:
        # when it is up: both `up`s said they are ready, or honcho stopped
        wait_until(lambda: honcho.poll() is not None or log.read_text().count(READY_LINE) == len(SERVICES), 120,
                   f"neither both `up`s ready nor honcho ended:\n{log}")  # fmt: skip
        assert honcho.poll() is None and log.read_text().count(READY_LINE) == len(SERVICES), log.read_text()
        brokers = {name: running_embedded(data_dirs[name]) for name in SERVICES}
        assert all(brokers.values()), (brokers, log.read_text())
        clients = {name: redis.Redis.from_url(url) for name, url in brokers.items()}
        processes = psutil.Process(honcho.pid).children(recursive=True)

        # then two redis-servers run under honcho, on two ports, one per service's folder
        servers = {name: client.info("server") for name, client in clients.items()}
        pids = {name: int(info["process_id"]) for name, info in servers.items()}
        assert len(set(pids.values())) == len(SERVICES), servers
        assert len({int(info["tcp_port"]) for info in servers.values()}) == len(SERVICES), servers
        under_honcho = {process.pid: process for process in processes}
        for name, pid in pids.items():
            assert pid in under_honcho and under_honcho[pid].name() == "redis-server", (pid, processes)
            assert Path(under_honcho[pid].cwd()).is_relative_to(data_dirs[name].resolve()), under_honcho[pid].cwd()

        # and each service's query runs on that service's worker, known to its own Redis only
        for name, other in (SERVICES, SERVICES[::-1]):
            with JobClient(name, brokers[name]) as client:
                _, request_id = client.put(f"hello {name}".encode(), {"taskType": "query"})
                assert client.result(request_id, timeout=60).data == f"echo:hello {name}".encode()
                worker = client.state(request_id).worker
            workers = read_presence(clients[name], name)
            assert worker in workers and worker.startswith(f"{name}-"), (worker, workers)
            assert read_presence(clients[name], other) == {}
            # and each Redis holds its own service's keys and queues, none of the other's
            owners = keys_of_services(clients[name])
            assert set(owners) == {name}, owners
        for client in clients.values():
            client.close()

        # when Ctrl-C reaches honcho
        honcho.send_signal(signal.SIGINT)

        # then both `up`s stop cleanly, every process honcho started is gone, and each `up` removed its records
        honcho.wait(90)  # 130, honcho's own code after SIGINT; each `up` ends by SIGTERM, as honcho sent it
        said = log.read_text()
        assert all(re.search(rf"^\S+ {name}\.1\s+\| stopped$", said, re.M) for name in SERVICES), said
        for process in processes:
            wait_until(lambda p=process: _gone(p), 30, f"{process} outlived honcho")
        for name, data_dir in data_dirs.items():
            assert not (data_dir / STACK_RECORD).exists() and not (data_dir / BROKER_RECORD).exists(), name
    finally:
        with contextlib.suppress(psutil.Error):
            processes += psutil.Process(honcho.pid).children(recursive=True)
        for process in processes:  # the parts that run in sessions of their own, out of honcho's group
            with contextlib.suppress(psutil.Error):
                process.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(honcho.pid, signal.SIGKILL)
        honcho.wait(30)


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _alive(up: UpProcess) -> bool:
    try:
        return psutil.Process(up.process.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
