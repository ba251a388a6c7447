"""`submit --wait`'s exit status and failure line, from the final entry and the request's status: pure."""

from __future__ import annotations

import pytest

from scalablejob.cli.requests import failure_summary, wait_exit_code
from scalablejob.store.sink import SinkEntry
from scalablejob.store.state import RequestStatus


def result(**tags: str) -> SinkEntry:
    return SinkEntry(7, b"last lines\n", {"requestId": "r1", "type": "result", **tags})


ERROR = SinkEntry(8, b"RuntimeError: no model", {"requestId": "r1", "type": "error"})


@pytest.mark.parametrize(
    ("entry", "status", "code"),
    [
        (result(), RequestStatus.DONE, 0),  # a query's answer
        (result(exitCode="0"), RequestStatus.DONE, 0),
        (result(exitCode="3"), RequestStatus.FAILED, 3),
        (result(exitCode="127"), RequestStatus.FAILED, 127),  # not found
        (result(exitCode="143", stopped="timeout"), RequestStatus.FAILED, 143),
        (result(exitCode="143", stopped="cancelled"), RequestStatus.CANCELLED, 143),
        (result(exitCode="0", stopped="cancelled"), RequestStatus.CANCELLED, 1),  # exited 0 but did not succeed
        (ERROR, RequestStatus.FAILED, 1),  # a failed query
        (ERROR, RequestStatus.CANCELLED, 1),  # cancelled before it ran
        (result(exitCode="3"), None, 3),  # its state already expired
    ],
)
def test_the_exit_status_is_the_commands_own_else_1(entry: SinkEntry, status: RequestStatus | None, code: int) -> None:
    assert wait_exit_code(entry, status) == code


def test_a_failed_command_is_summed_up_by_its_exit_code_and_why_it_stopped() -> None:
    entry = result(exitCode="143", durationSeconds="1.500", stopped="timeout")

    assert failure_summary("r1", entry, RequestStatus.FAILED) == "request r1 failed: exit code 143, stopped by timeout"


def test_a_failed_query_is_summed_up_by_its_error() -> None:
    assert failure_summary("r1", ERROR, RequestStatus.FAILED) == "request r1 failed: RuntimeError: no model"
