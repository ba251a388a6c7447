"""User code for the Celery-native tests: named tasks, one a training task, on the service of $SCALABLEJOB_CONFIG
(so one module serves each test's service); `celery -A sj_celery_tasks` finds `app`."""

from __future__ import annotations

import json
import os
import time

from scalablejob import Job, QueryContext


def shout(body: bytes, ctx: QueryContext) -> str:
    return body.decode().upper()


def count_words(body: bytes) -> dict[str, int]:
    return {"words": len(body.split())}


def explode(body: bytes | str) -> None:
    raise ValueError(body if isinstance(body, str) else body.decode())


def train(body: bytes, ctx: QueryContext) -> dict[str, object]:
    """{"until": path} runs until the file exists; {"fail": msg} raises after training; else returns at once."""
    params = json.loads(body or b"{}")
    print("training started", flush=True)
    ctx.progress(0.5, "half way")
    while params.get("until") and not os.path.exists(params["until"]):
        time.sleep(0.02)
    if params.get("fail"):
        raise RuntimeError(params["fail"])
    return {"loss": 0.125, "request": ctx.request_id}


def register(job: Job) -> Job:
    """The tasks of these tests on `job`: shout and count (queries), explode (a failing query), train (training)."""
    job.task(shout)
    job.task(name="count")(count_words)
    job.task(explode)
    job.task(name="train", task_type="command")(train)
    return job


job = register(Job())  # the service config comes from $SCALABLEJOB_CONFIG
app = job.celery if job.service else None
