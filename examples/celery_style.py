"""A Celery project's tasks module on scalablejob: ordinary Celery tasks, the app from a Job (the one changed line).

From this folder, with a broker running (`scalablejob redis` here, or $SCALABLEJOB_BROKER):

    celery -A celery_style worker                      # a scalablejob worker of celery_style.json
    python -c 'from celery_style import add; print(add.delay(2, 3).get(timeout=10))'
    celery -A celery_style inspect registered
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from scalablejob import Job

job = Job(config=Path(__file__).with_name("celery_style.json"))  # was: app = Celery("proj", broker=...)
app = job.celery  # what `celery -A celery_style` finds


@app.task
def add(x: int, y: int) -> int:
    """A query task (the default type): runs in a worker thread."""
    return x + y


@job.task
def shout(text: str) -> str:
    """Also a query task. A queue-service request (`?task=shout` over HTTP) calls it with its body, as bytes."""
    return text.upper()


@job.task(name="count")
def count_words(text: str) -> dict[str, int]:
    return {"words": len(text.split())}


@job.task(bind=True, autoretry_for=(ConnectionError,), retry_backoff=0.1, max_retries=3)
def download(self: Any, name: str) -> str:
    """Fails twice (a flaky network), then succeeds: Celery's autoretry_for and retry_backoff at work."""
    if self.request.retries < 2:
        raise ConnectionError(f"{name}: connection reset")
    return f"{name} after {self.request.retries} retries"


@job.task(name="train", task_type="command", bind=True)
def train(self: Any, params: dict[str, Any]) -> dict[str, float]:
    """A training task: runs in a process of its own (revoke(terminate=True) and time limits stop it); its prints go to
    the worker's log, and its progress is the task state PROGRESS."""
    epochs, loss = int(params.get("epochs", 3)), 1.0
    for epoch in range(1, epochs + 1):
        time.sleep(float(params.get("seconds_per_epoch", 0.2)))
        loss /= 2
        print(f"epoch {epoch}/{epochs}: loss {loss:.4f}", flush=True)
        self.update_state(state="PROGRESS", meta={"epoch": epoch, "epochs": epochs})
    if params.get("fail"):
        raise ValueError(f"diverged after {epochs} epochs")
    return {"epochs": epochs, "loss": loss}
