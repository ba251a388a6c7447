"""Fixtures for the Celery-native tests: `celery -A sj_celery_tasks ...` processes (worker, inspect, status, flower)
on a real redis-server, and the same user code loaded here for `.delay()`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, WorkerProcess, launch_worker
from scalablejob import Job
from scalablejob.api.user_code import import_user_module
from scalablejob.local.ports import free_port

SUPPORT = REPO / "tests" / "support"
CELERY = str(Path(sys.executable).with_name("celery"))
TASKS_MODULE = "sj_celery_tasks"


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / f"{config['metadata']['name']}.json"
    path.write_text(json.dumps(config))
    return path


def celery_env(config_path: Path, broker: str) -> dict[str, str]:
    """What a Celery user's shell would hold: the module on PYTHONPATH, the config and the broker in the environment."""
    env = {**os.environ, "SCALABLEJOB_CONFIG": str(config_path), "SCALABLEJOB_BROKER": broker}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SUPPORT), os.environ.get("PYTHONPATH")]))
    return env


@pytest.fixture
def celery_cli(tmp_path: Path, redis_url: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `celery -A sj_celery_tasks ARGS` for a service config to its end."""

    def run(
        config: dict[str, Any], *args: str, timeout: float = 60, module: str = TASKS_MODULE
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        env = celery_env(write_config(tmp_path, config), redis_url)
        return subprocess.run(
            [CELERY, "-A", module, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    return run


@pytest.fixture
def start_celery_worker(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `celery -A sj_celery_tasks worker` processes for a service config; all are stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(
        config: dict[str, Any], *args: str, wait: bool = True, module: str = TASKS_MODULE, **_: Any
    ) -> WorkerProcess:  # fmt: skip
        service = config["metadata"]["name"]
        hostname = f"{service}-c{len(workers)}@test"
        log_path = tmp_path / f"{hostname}.log"
        env = celery_env(write_config(tmp_path, config), redis_url)
        argv = [CELERY, "-A", module, "worker", "-n", hostname, "-l", "INFO", *args]
        worker = launch_worker(argv, hostname, log_path, cwd=tmp_path, env=env)
        workers.append(worker)
        if wait:
            worker.wait_ready(service, redis_url)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def celery_job(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, Any]], Job]]:
    """The tests' tasks on a Job of a service config, here in the test process, for `.delay()` and `AsyncResult`."""
    monkeypatch.setenv("SCALABLEJOB_BROKER", redis_url)
    tasks = import_user_module(str(SUPPORT / f"{TASKS_MODULE}.py"))
    jobs: list[Job] = []

    def make(config: dict[str, Any]) -> Job:
        jobs.append(tasks.register(Job(config=write_config(tmp_path, config))))
        return jobs[-1]

    yield make
    for job in jobs:
        job.close()


@pytest.fixture
def celery_module(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, Any], str], Any]]:
    """A support tasks module imported here, as a Celery project's callers import theirs, on a service config."""
    modules: list[Any] = []

    def load(config: dict[str, Any], name: str) -> Any:
        monkeypatch.setenv("SCALABLEJOB_BROKER", redis_url)
        monkeypatch.setenv("SCALABLEJOB_CONFIG", str(write_config(tmp_path, config)))
        modules.append(import_user_module(str(SUPPORT / f"{name}.py")))
        return modules[-1]

    yield load
    for module in modules:
        module.job.close()


@pytest.fixture
def start_celery_flower(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., tuple[str, Path]]]:
    """Start `celery -A MODULE flower` (debug log) for a service config: its URL and log file. By default its API is
    open and it listens on 127.0.0.1; `as_documented=True` starts it with no options but its port, as a user would."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(
        config: dict[str, Any], module: str = TASKS_MODULE, as_documented: bool = False
    ) -> tuple[str, Path]:  # fmt: skip
        port, log_path = free_port(), tmp_path / "flower.log"
        env = celery_env(write_config(tmp_path, config), redis_url)
        argv = [CELERY, "-A", module, "flower", f"--port={port}"]
        if not as_documented:
            env.update(FLOWER_UNAUTHENTICATED_API="true", SCALABLEJOB_FLOWER_NO_AUTH="1")
            argv += ["--address=127.0.0.1", "--logging=debug"]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        processes.append(process)
        return f"http://127.0.0.1:{port}", log_path

    yield start
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
