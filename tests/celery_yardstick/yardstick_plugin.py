"""The pytest plugin of both runs of the yardstick (`-p yardstick_plugin`).

It caps every test's time limit at the command line's `--timeout`, Celery's own marks included (its flaky tests carry
`timeout(300)`, and a canvas test waits 60 s for a result that never comes): a mark under the cap stays as it is.
And it appends each test's start and each phase's outcome to the JSON-lines file $YARDSTICK_EVENTS as they happen,
so that the runner sees which test runs and for how long: a test that outlives its limit (one whose subtests swallow
pytest-timeout's exception, then block with no timeout) is killed with its run, which goes on from the next test.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

EVENTS_ENV = "YARDSTICK_EVENTS"
DONE_ENV = "YARDSTICK_DONE"  # a file of node ids, one a line: tests an earlier run of the file got to, left out


def marked_limit(item: pytest.Item) -> float | None:
    """The time limit of a test's closest `timeout` mark (pytest-timeout's signature: timeout=None, ...)."""
    mark = item.get_closest_marker("timeout")
    if mark is None:
        return None
    limit = mark.kwargs.get("timeout", mark.args[0] if mark.args else None)
    return None if limit is None else float(limit)


def _done() -> set[str]:
    path = os.environ.get(DONE_ENV)
    return set(open(path, encoding="utf-8").read().splitlines()) if path and os.path.exists(path) else set()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    done = _done()  # exact node ids: pytest's --deselect takes prefixes (test_fail would drop test_fail_with_...)
    if done:
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid in done])
        items[:] = [item for item in items if item.nodeid not in done]
    cap = config.getoption("timeout", None)
    if not cap:
        return
    for item in items:
        limit = marked_limit(item)
        if limit is None or limit > float(cap):
            item.add_marker(pytest.mark.timeout(float(cap)), append=False)  # first: the closest mark wins


def _write(event: dict[str, Any]) -> None:
    path = os.environ.get(EVENTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as events:
            events.write(json.dumps(event) + "\n")


def reason_of(report: pytest.TestReport) -> str:
    """Why a phase did not pass: the crash line of a failure, the reason of a skip."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    return str(getattr(crash, "message", None) or longrepr or "")


def pytest_runtest_logstart(nodeid: str) -> None:
    _write({"start": nodeid, "at": time.time()})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    event = {"test": report.nodeid, "when": report.when, "outcome": report.outcome}
    _write(event if report.passed else {**event, "reason": reason_of(report)})
