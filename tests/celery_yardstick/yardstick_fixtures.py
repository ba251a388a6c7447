"""Celery's integration-test fixtures with the app and the worker replaced by scalablejob's.

bench/celery_yardstick.py appends `from yardstick_fixtures import *` to the conftest of a copy of Celery's
t/integration, so these definitions replace Celery's own of the same names:

- `celery_session_app` and `celery_app` (the app of the test process, which sends every task: `manager.app`, and the
  current app that Celery's shared tasks bind to) are our service's app, `Job().celery`, with the service config of
  $SCALABLEJOB_CONFIG and the broker of $SCALABLEJOB_BROKER: the one line a Celery project changes. Celery's
  `celery_config` applies on top, but for its broker and result backend: those are the service's.
- `celery_session_worker` is a real worker process, `celery -A yardstick_app worker`, whose app is the same and has
  Celery's task modules (`celery_includes`) and class tasks (`celery_class_tasks`) registered, as Celery's fixture
  registers them on its in-thread worker.
- `ZZZZ_set_app_current` keeps Celery's guard (a test must not add queues), with our service's queues as the
  expected set instead of Celery's lone `celery` queue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.app import setup_default_app

from scalablejob.host.processes import dying_with_parent, stop_group

__all__ = ["ZZZZ_set_app_current", "celery_app", "celery_session_app", "celery_session_worker"]

SETTINGS_ENV = "YARDSTICK_SETTINGS"  # Celery's celery_config less broker and backend, for the worker's app (JSON)
INCLUDES_ENV = "YARDSTICK_INCLUDES"  # task modules to import, and class tasks to register (JSON lists)
CLASS_TASKS_ENV = "YARDSTICK_CLASS_TASKS"
LOG_DIR_ENV = "YARDSTICK_LOG_DIR"  # where the worker's log goes (the runner keeps it); else a pytest temp folder
SERVICE_SETTINGS = ("broker_url", "result_backend")  # the service's, not Celery's test config's
WORKER_READY_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 20.0
HERE = Path(__file__).resolve().parent


def celery_settings(config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Celery's test config (and a test's `@pytest.mark.celery` overrides) less what the service sets."""
    return {k: v for k, v in {**config, **(overrides or {})}.items() if k not in SERVICE_SETTINGS}


def our_app(settings: Mapping[str, Any]) -> Celery:
    """Our service's app, as a Celery project gets it after its one changed line, with Celery's test settings."""
    from scalablejob import Job

    app = Job().celery  # the config from $SCALABLEJOB_CONFIG, the broker from $SCALABLEJOB_BROKER
    app.conf.update(settings)
    return app


def _mark_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    mark = request.node.get_closest_marker("celery")
    return dict(mark.kwargs) if mark else {}


@pytest.fixture(scope="session")
def celery_session_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any]) -> Iterator[Celery]:
    app = our_app(celery_settings(celery_config, _mark_overrides(request)))
    with setup_default_app(app):
        app.set_default()
        app.set_current()
        yield app
    app.close()


@pytest.fixture
def celery_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any]) -> Iterator[Celery]:
    app = our_app(celery_settings(celery_config, _mark_overrides(request)))
    with setup_default_app(app):
        yield app
    app.close()


class WorkerProcess:
    """The session's worker: a `celery -A yardstick_app worker` process in a session of its own, and its log."""

    def __init__(self, app: Celery, process: subprocess.Popen[bytes], hostname: str, log_path: Path) -> None:
        self.app = app
        self.process = process
        self.hostname = hostname
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = WORKER_READY_TIMEOUT_S) -> None:
        """Until the worker answers a control ping (it consumes), or fail with its log."""
        deadline = time.monotonic() + timeout_s
        while not self.app.control.ping(destination=[self.hostname], timeout=0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                how = f"exited {self.process.returncode}" if self.process.poll() is not None else "never answered"
                pytest.fail(f"worker {self.hostname} {how}:\n{self.log()}")

    def stop(self, timeout_s: float = WORKER_STOP_TIMEOUT_S) -> None:
        """Warm shutdown (SIGTERM to its process group); SIGKILL if it has not exited in time."""
        stop_group(self.process, timeout_s)


@pytest.fixture(scope="session")
def celery_session_worker(
    request: pytest.FixtureRequest, celery_session_app: Celery, celery_config: Mapping[str, Any],
    celery_includes: list[str], celery_class_tasks: list[type], tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:  # fmt: skip
    for module in celery_includes:
        celery_session_app.loader.import_task_module(module)
    for class_task in celery_class_tasks:
        celery_session_app.register_task(class_task)
    log_dir = Path(os.environ.get(LOG_DIR_ENV) or tmp_path_factory.mktemp("worker"))
    hostname = f"yardstick-{os.getpid()}@127.0.0.1"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(request.config.rootpath), str(HERE), os.environ.get("PYTHONPATH", "")]),
        SETTINGS_ENV: json.dumps(celery_settings(celery_config)),
        INCLUDES_ENV: json.dumps(sorted(celery_includes)),
        CLASS_TASKS_ENV: json.dumps([f"{cls.__module__}:{cls.__qualname__}" for cls in celery_class_tasks]),
    }
    log_path = log_dir / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "yardstick_app", "worker", "-n", hostname, "-l", "INFO"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # it dies with this process, however that ends
            dying_with_parent(argv), cwd=request.config.rootpath, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    worker = WorkerProcess(celery_session_app, process, hostname, log_path)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture(autouse=True)
def ZZZZ_set_app_current(app: Celery, celery_session_app: Celery) -> Iterator[None]:
    """Celery's autouse fixture: the test's app is current; a test that adds a queue to either app fails."""
    expected = {name: set(each.amqp.queues) for name, each in (("function", app), ("session", celery_session_app))}
    app.set_current()
    app.set_default()
    yield
    for name, each in (("function", app), ("session", celery_session_app)):
        if set(each.amqp.queues) != expected[name]:
            pytest.fail(
                f"Integration {name} app must only use the service's queues {sorted(expected[name])}; "
                f"found {sorted(each.amqp.queues)}"
            )
