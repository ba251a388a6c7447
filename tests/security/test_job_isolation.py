"""A job may not read its worker's secrets. The worker makes itself non-dumpable before any user code runs (its own
user's jobs then cannot read its /proc/PID/environ, which holds the broker's password), and `scalable_job.run_as`
starts jobs as another user. Root bypasses the first, so the second is shown with a user this test creates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, launch_worker, service_config
from scalablejob import JobClient
from scalablejob.local.embedded_broker import EmbeddedBroker
from scalablejob.store.broker import BROKER_ENV, PASSWORD_FILE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PR_GET_DUMPABLE = 3
DUMPABLE_APP = f"""
import ctypes
from scalablejob import Job
job = Job()
@job.query
def dumpable(body, ctx):
    return str(ctypes.CDLL(None).prctl({PR_GET_DUMPABLE}, 0, 0, 0, 0)).encode()
"""


@pytest.fixture
def job_user() -> Iterator[str]:
    """A user of this host made for the test (root and useradd needed), removed after it."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd, to create the user jobs run as")
    name = f"sj{uuid.uuid4().hex[:10]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def embedded_worker(tmp_path: Path) -> Iterator:
    """Start one worker of a service config on an embedded broker of its own (a data folder with its password)."""
    brokers: list[EmbeddedBroker] = []
    workers = []

    def start(config: dict, app: Path | None = None) -> tuple[str, Path]:
        data_dir = tmp_path / "data"
        broker = EmbeddedBroker(data_dir)
        brokers.append(broker)
        url = broker.start()
        config_path = tmp_path / "service.json"
        config_path.write_text(json.dumps(config))
        name = config["metadata"]["name"]
        argv = [sys.executable, "-m", "scalablejob", "worker", str(config_path), "-n", f"{name}@iso"]
        worker = launch_worker([*argv, *(["--app", str(app)] if app else [])], f"{name}@iso", tmp_path / "w.log",
                               cwd=REPO, env={**os.environ, BROKER_ENV: url})  # fmt: skip
        workers.append(worker)
        worker.wait_ready(name, url)
        return url, data_dir

    yield start
    for worker in workers:
        worker.stop()
    for broker in brokers:
        broker.stop()


def test_the_worker_is_not_dumpable_when_user_code_runs(tmp_path, embedded_worker):
    app = tmp_path / "dumpable_app.py"
    app.write_text(DUMPABLE_APP)
    url, _ = embedded_worker(service_config("iso"), app)

    with JobClient("iso", url) as client:
        _, request_id = client.put(b"", {"taskType": "query"})
        assert client.result(request_id, timeout=30).data == b"0"  # 0: not dumpable (1 is the kernel's default)


def test_run_as_starts_jobs_as_another_user_who_reads_neither_the_workers_environment_nor_the_password(
    job_user, embedded_worker
):
    # given a worker (root) whose jobs run as a user made for the test
    url, data_dir = embedded_worker({**service_config("iso"), "scalable_job": {"run_as": job_user}})
    password_file = data_dir / PASSWORD_FILE
    assert password_file.read_text().strip()  # the broker has one
    script = f"id -un; cat /proc/$PPID/environ; echo environ $?; cat {password_file}; echo password $?"

    # when a command job tries to read its worker's environment (its parent's) and the data folder's password
    with JobClient("iso", url) as client:
        _, request_id = client.put(json.dumps(["sh", "-c", script]), {"taskType": "command"})
        entry = client.result(request_id, timeout=60)
        lines = [line.data.decode() for line in client.logs(request_id) if line.type == "log"]

    # then it ran as that user and could read neither
    assert entry.tags["exitCode"] == "0", lines
    assert lines[0] == job_user
    assert "environ 1" in lines and "password 1" in lines, lines
    assert sum("Permission denied" in line for line in lines) == 2, lines
    assert not any(url.split("@")[0].split(":")[-1] in line for line in lines)  # the password never showed


def test_an_unknown_run_as_user_stops_the_worker_at_start_naming_the_setting(tmp_path):
    config = tmp_path / "service.json"
    config.write_text(json.dumps({**service_config("iso"), "scalable_job": {"run_as": "no-such-user-xyz"}}))
    run = subprocess.run(
        [sys.executable, "-m", "scalablejob", "worker", str(config), "--broker", "redis://127.0.0.1:1/0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode != 0
    assert "$.scalable_job.run_as: expected a user of this host, got 'no-such-user-xyz'" in run.stderr
