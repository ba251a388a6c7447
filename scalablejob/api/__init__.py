"""The Python API: `Job` (tasks of user code), `JobClient` (put, watch, results), and the Celery app they share."""
