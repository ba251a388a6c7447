"""Two services on one machine, each under its own `scalablejob up` with its own data folder, so its own embedded
Redis, scaler, workers and ports: the way to grow past one Redis (issue 26, goal 5). Each service's requests run on
its own workers and touch only its own Redis, and stopping one (`scalablejob down --data-dir`) leaves the other
serving."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psutil
import pytest
import redis

from conftest import CLI, REPO, TEST_HANDLERS, UpProcess, wait_until
from scalablejob import JobClient
from scalablejob.model.keys import KEY_PREFIX
from scalablejob.store.broker import BROKER_ENV, DATA_DIR_ENV
from scalablejob.store.presence import read_presence

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVICES = ("alpha", "beta")


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


def _alive(up: UpProcess) -> bool:
    try:
        return psutil.Process(up.process.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
