"""A Celery project laid out as many are: the app in one module (this one, what `celery -A` names), its tasks in
another that holds no app, made with @shared_task (tests/support/sj_celery_shared_tasks.py)."""

from __future__ import annotations

from scalablejob import Job

job = Job()
app = job.celery if job.service else None

import sj_celery_shared_tasks  # noqa: E402, F401  # the tasks, registered on the app as it is finalized
