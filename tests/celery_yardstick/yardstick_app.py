"""The app module of the yardstick's worker (`celery -A yardstick_app worker`): Celery's integration-test tasks on
our service's app, the one line a Celery project changes being where the app comes from. What Celery's
`celery_session_worker` fixture registers on its app (task modules, class tasks) the test process passes in its
environment (yardstick_fixtures.py)."""

from __future__ import annotations

import importlib
import json
import os

from yardstick_fixtures import CLASS_TASKS_ENV, INCLUDES_ENV, SETTINGS_ENV, our_app

app = our_app(json.loads(os.environ.get(SETTINGS_ENV, "{}")))
for module in json.loads(os.environ.get(INCLUDES_ENV, "[]")):
    app.loader.import_task_module(module)
for spec in json.loads(os.environ.get(CLASS_TASKS_ENV, "[]")):
    module_name, _, qualname = spec.partition(":")
    app.register_task(getattr(importlib.import_module(module_name), qualname))
