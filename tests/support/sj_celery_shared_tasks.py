"""The tasks module of sj_celery_shared_app: @shared_task only, no app of its own."""

from __future__ import annotations

import os

from celery import shared_task


@shared_task(name="shared_train", task_type="command")
def shared_train(epochs: int) -> dict[str, int]:
    """A command task in a module without an app: its call's process must still find it."""
    return {"epochs": epochs, "pid": os.getpid()}
