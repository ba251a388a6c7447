"""A Celery project's tasks module, moved over with one line (the app comes from scalablejob): ordinary Celery
signatures, bind, retries, time limits, a command task; the service is that of $SCALABLEJOB_CONFIG."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_prerun

from scalablejob import Job

job = Job()  # the one changed line: was `app = Celery("proj", broker=...)`
app = job.celery if job.service else None


@job.task
def add(x: int, y: int) -> int:
    return x + y


@job.task(bind=True)
def whoami(self: object, *args: object, **kwargs: object) -> dict[str, object]:
    request = self.request  # type: ignore[attr-defined]
    return {"id": request.id, "args": list(args), "kwargs": kwargs, "retries": request.retries}


@job.task(bind=True, max_retries=3)
def flaky(self: object, succeed_on: int) -> int:
    retries = self.request.retries  # type: ignore[attr-defined]
    if retries < succeed_on:
        raise self.retry(countdown=0.05, exc=ConnectionError(f"attempt {retries}"))  # type: ignore[attr-defined]
    return retries


@job.task(autoretry_for=(ConnectionError,), retry_backoff=0.05, retry_jitter=False, max_retries=2)
def always_down() -> None:
    raise ConnectionError("still down")


@job.task
def fail(message: str) -> None:
    raise ValueError(message)


@shared_task(name="total")
def total(numbers: list[int]) -> int:
    return sum(numbers)


@job.task(task_type="command", bind=True)
def train(self: object, epochs: int = 2, until: str | None = None, fail_with: str | None = None) -> dict[str, object]:
    """A training task in a process of its own: runs until the file `until` exists, if given."""
    print(f"training {epochs} epochs", flush=True)
    while until and not os.path.exists(until):
        time.sleep(0.02)
    if fail_with:
        raise RuntimeError(fail_with)
    return {"epochs": epochs, "pid": os.getpid(), "id": self.request.id}  # type: ignore[attr-defined]


@job.task(soft_time_limit=0.5)
def spin(seconds: float) -> str:
    """A query task (a worker thread) past its soft time limit."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "stopped at the soft time limit"
    return "finished"


@job.task(task_type="command", soft_time_limit=0.5, time_limit=5)
def slow(seconds: float) -> str:
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "stopped at the soft time limit"
    return "finished"


@job.task(task_type="command", soft_time_limit=0.5, time_limit=10)
def soft_with_helper() -> str:
    """A command task that started a process of its own, past its soft limit: whether that process outlived it."""
    helper = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        try:
            helper.wait(1)  # a helper that the soft limit's signal reached is gone within this
        except subprocess.TimeoutExpired:
            return "its helper outlived the soft limit"
        return f"its helper ended with {helper.returncode}"
    finally:
        helper.kill()
        helper.wait()
    return "finished"


@job.task(task_type="command")
def stubborn(folder: str) -> str:
    """A command task that ignores SIGTERM: only SIGKILL stops it before `folder`/go exists (or 30 s)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(folder, "ready").touch()
    deadline = time.monotonic() + 30
    while not Path(folder, "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "finished"


@job.task(task_type="command")
def leave_behind() -> dict[str, float]:
    """A command task that returns at once, leaving a process behind that holds its output."""
    helper = subprocess.Popen(["sleep", "60"])  # inherits the task's stdout
    return {"helper": helper.pid, "returned_at": time.time()}


@job.task(task_type="command")
def held(folder: str) -> str:
    """A command task held after its worker accepted it, before its process starts (see _hold_before_start)."""
    return "ran"


@task_prerun.connect
def _hold_before_start(task: Any = None, args: Any = None, **_: Any) -> None:
    """In the worker, `held(folder)` waits here (accepted, its process not yet started) until `folder`/go exists."""
    if getattr(task, "name", None) != "held" or not args:
        return
    Path(args[0], "accepted").touch()
    deadline = time.monotonic() + 30
    while not Path(args[0], "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


@job.task(task_type="command")
def killed() -> None:
    """A command task whose process is killed (as the kernel's OOM killer would) before it reports a result."""
    os.kill(os.getpid(), signal.SIGKILL)


@job.task
def store(data: bytes, meta: dict[str, str]) -> str:
    """A query task whose arguments have a queue-service request's shape: bytes, then a dict."""
    return f"{len(data)} bytes, {sorted(meta.items())}"


@job.task(task_type="command", bind=True, max_retries=1)
def retry_quietly(self: object, folder: str) -> str:
    """A command task that asks for a retry without raising (throw=False), then goes on, as Celery lets it."""
    if self.request.retries == 0:  # type: ignore[attr-defined]
        self.retry(countdown=0.1, throw=False)  # type: ignore[attr-defined]
        Path(folder, "after-retry").touch()
        return "first"
    Path(folder, "retried").touch()
    return "retried"
