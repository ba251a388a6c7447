"""Celery-style user code: named tasks on one service, one of them a training task, run the way Celery runs them.

From this folder, with a broker running (`scalablejob redis` here, or $SCALABLEJOB_BROKER):

    celery -A celery_style worker                      # a scalablejob worker of celery_style.json
    celery -A celery_style inspect registered
    python -c 'from celery_style import shout; print(shout.delay("hello").get(timeout=10))'
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from scalablejob import Job, QueryContext

job = Job(config=Path(__file__).with_name("celery_style.json"))  # the service: its name, queues, slots, limits
app = job.celery  # what `celery -A celery_style` finds


@job.task
def shout(body: bytes, ctx: QueryContext) -> str:
    """A query task: runs in a worker thread, answers at once."""
    return body.decode("utf-8", "replace").upper()


@job.task(name="count")
def count_words(body: bytes) -> dict[str, int]:
    """Another query task, named `count`: a request picks it with the tag task=count."""
    return {"words": len(body.split())}


@job.task(name="train", task_type="command")
def train(body: bytes, ctx: QueryContext) -> dict[str, float]:
    """A training task: runs in a process of its own; its prints and progress stream to the output queue, and it
    can be cancelled (revoke) or time out (scalable_job.task_timeout_seconds)."""
    params = json.loads(body or b"{}")
    epochs, loss = int(params.get("epochs", 3)), 1.0
    for epoch in range(1, epochs + 1):
        time.sleep(float(params.get("seconds_per_epoch", 0.2)))
        loss /= 2
        print(f"epoch {epoch}/{epochs}: loss {loss:.4f}", flush=True)
        ctx.progress(epoch / epochs, f"epoch {epoch}/{epochs}")
    if params.get("fail"):
        raise ValueError(f"diverged after {epochs} epochs")
    return {"epochs": epochs, "loss": loss}
