"""A message this worker cannot run (a newer protocol version, or arguments of a newer release) is put back, never
run or failed; it is said once per reason, counted, and its queue held off. A checked task runs in-process here
(Celery's `apply`, on an app of its own: Celery shares a task name's first registration with every later app);
tests/integration/test_upgrade.py puts such a message through a real worker process."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Reject

from scalablejob.model.protocol import MESSAGE_HEADER, PROTOCOL_VERSION
from scalablejob.model.routing import TaskType
from scalablejob.workers.protocol_check import (
    PUT_BACK_HOLD_OFF_S,
    PutBack,
    UnhandledMessages,
    protocol_checked,
    quiet_put_backs,
)

NEWER = PROTOCOL_VERSION + 1


class Recorder:
    """What the checks reported to the presence record and the gate."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, str]] = []
        self.holds: list[tuple[TaskType, float]] = []

    def unhandled(self) -> UnhandledMessages:
        return UnhandledMessages(lambda count, reason: self.reports.append((count, reason)),
                                 lambda task_type, seconds: self.holds.append((task_type, seconds)))  # fmt: skip


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def runs() -> list[tuple[bytes, str | None]]:
    return []


@pytest.fixture
def query(recorder: Recorder, runs: list[tuple[bytes, str | None]]) -> Any:
    """A query task with the generic task's arguments, behind the check; it records each run."""
    app = Celery("test-protocol", set_as_current=False)

    @app.task(name="probe", bind=True, shared=False)
    @protocol_checked(TaskType.QUERY, recorder.unhandled())
    def probe(self: Any, body: bytes, tags: dict[str, str], frontend: str | None = None) -> None:
        runs.append((body, frontend))

    return probe


def test_a_message_of_a_newer_version_is_put_back_not_run(
    query: Any, runs: list[tuple[bytes, str | None]], recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="scalablejob.workers.protocol_check"):
        first = query.apply(args=(b"q", {}), kwargs={"frontend": "web"}, task_id="r1", headers={MESSAGE_HEADER: NEWER})
        second = query.apply(args=(b"q", {}), task_id="r2", headers={MESSAGE_HEADER: NEWER})

    assert (first.state, second.state) == ("REJECTED", "REJECTED")
    assert isinstance(first.result, PutBack) and first.result.requeue
    assert runs == []
    reason = f"protocol version {NEWER}, newer than this worker's {PROTOCOL_VERSION}"
    assert recorder.reports == [(1, reason), (2, reason)]
    assert recorder.holds == [(TaskType.QUERY, PUT_BACK_HOLD_OFF_S)] * 2
    said = [record.getMessage() for record in caplog.records if record.name == "scalablejob.workers.protocol_check"]
    assert len(said) == 1 and reason in said[0] and "request r1" in said[0]  # once for this reason


def test_arguments_of_a_newer_release_are_put_back_not_failed(
    query: Any, runs: list[tuple[bytes, str | None]], recorder: Recorder
) -> None:
    # a worker before versions failed this with "TypeError: ... got an unexpected keyword argument 'deadline'"
    done = query.apply(args=(b"q", {}), kwargs={"frontend": "web", "deadline": 5}, task_id="r1")

    assert done.state == "REJECTED"
    assert runs == []
    [(count, reason)] = recorder.reports
    assert count == 1 and "unexpected keyword argument 'deadline'" in reason


@pytest.mark.parametrize("headers", [{}, {MESSAGE_HEADER: PROTOCOL_VERSION}])
def test_a_message_of_the_last_release_or_this_one_runs(
    query: Any, runs: list[tuple[bytes, str | None]], recorder: Recorder, headers: dict[str, int]
) -> None:
    done = query.apply(args=(b"q", {}), kwargs={"frontend": "web"}, task_id="r1", headers=headers)

    assert done.state == "SUCCESS"
    assert runs == [(b"q", "web")]
    assert recorder.reports == []


def test_celerys_own_line_for_a_put_back_task_is_left_out() -> None:
    celery_logger = logging.getLogger("celery.app.trace")
    quiet = quiet_put_backs()

    def record(exc: Exception) -> logging.LogRecord:
        return celery_logger.makeRecord("celery.app.trace", logging.WARNING, __file__, 1, "Task rejected", (),
                                        (type(exc), exc, None))  # fmt: skip

    try:
        assert not celery_logger.filter(record(PutBack("protocol version 2", requeue=True)))
        assert celery_logger.filter(record(Reject("broker failed", requeue=True)))  # other rejects are still logged
    finally:
        celery_logger.removeFilter(quiet)
