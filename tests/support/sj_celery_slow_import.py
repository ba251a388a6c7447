"""A tasks module whose import takes a second in a command call's process (as one that loads torch or a model at
its top level does), with a command task whose soft time limit is shorter than that; the service is that of
$SCALABLEJOB_CONFIG."""

from __future__ import annotations

import os
import time

from scalablejob import Job

if os.environ.get("SCALABLEJOB_JOB_TOKEN"):  # set in a job's processes only: the worker imports this at once
    time.sleep(1)

job = Job()
app = job.celery if job.service else None


@job.task(task_type="command", soft_time_limit=0.5, time_limit=10)
def quick() -> str:
    """Returns at once: only its module's import is slow."""
    return "done"
