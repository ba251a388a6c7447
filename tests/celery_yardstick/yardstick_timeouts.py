"""A pytest plugin for both runs of the yardstick (`-p yardstick_timeouts`): the command line's `--timeout` bounds
every test, over Celery's own marks (its flaky tests carry `timeout(300)`, and a canvas test waits 60 s for a result
that never comes), so that a run against a worker that answers nothing still ends in bounded time."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    limit = config.getoption("timeout", None)
    if not limit:
        return
    for item in items:
        item.add_marker(pytest.mark.timeout(float(limit)), append=False)  # first: the closest mark wins
