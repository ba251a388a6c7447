"""A Celery project's tasks module, moved over with one line (the app comes from scalablejob): ordinary Celery
signatures, bind, retries, time limits, a command task; the service is that of $SCALABLEJOB_CONFIG."""

from __future__ import annotations

import os
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

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
