"""Celery's result meta of a request: our states as Celery's, and the value or exception `.get()` gives."""

from __future__ import annotations

from typing import Any

import pytest
from celery import states
from celery.exceptions import TaskRevokedError

from scalablejob.api.result_backend import celery_state, task_meta
from scalablejob.model.errors import CommandFailed, HandlerError
from scalablejob.store.sink import SinkEntry
from scalablejob.store.state import RequestState, RequestStatus


def request(status: RequestStatus, task_type: str = "query", **fields: Any) -> RequestState:
    return RequestState("r1", 1, task_type, status, queued_at=1.0, **fields)


def entry(data: bytes, **tags: str) -> SinkEntry:
    return SinkEntry(7, data, {"requestId": "r1", **tags})


@pytest.mark.parametrize(
    ("status", "celery"),
    [
        (None, states.PENDING),
        (RequestStatus.QUEUED, states.PENDING),
        (RequestStatus.RUNNING, states.STARTED),
        (RequestStatus.DONE, states.SUCCESS),
        (RequestStatus.FAILED, states.FAILURE),
        (RequestStatus.CANCELLED, states.REVOKED),
    ],
)
def test_our_states_map_to_celerys(status: RequestStatus | None, celery: str) -> None:
    assert celery_state(status) == celery


def test_an_unknown_request_is_pending_as_in_celery() -> None:
    meta = task_meta("r1", None, None)

    assert (meta["status"], meta["result"], meta["date_done"]) == (states.PENDING, None, None)


def test_a_running_request_tells_its_worker_and_progress() -> None:
    meta = task_meta("r1", request(RequestStatus.RUNNING, worker="w1@host", progress=0.5, message="half"), None)

    assert meta["result"] == {"hostname": "w1@host", "progress": 0.5, "message": "half"}


@pytest.mark.parametrize(
    ("final", "value"),
    [
        (entry(b'{"loss": 0.1}', resultEncoding="json"), {"loss": 0.1}),
        (entry(b"HELLO", resultEncoding="text"), "HELLO"),
        (entry(b"\x00raw"), b"\x00raw"),
        (entry(b"", resultEncoding="none"), None),
        (None, None),  # the entry is gone from the output queue: the value with it
    ],
    ids=["json", "text", "bytes", "none", "gone"],
)
def test_a_done_request_gives_its_value_decoded(final: SinkEntry | None, value: Any) -> None:
    meta = task_meta("r1", request(RequestStatus.DONE, finished_at=5.0, result_index=7), final)

    assert meta["status"] == states.SUCCESS and meta["result"] == value
    assert meta["date_done"].timestamp() == 5.0


def test_a_failed_task_raises_its_own_exception_type_and_message() -> None:
    state = request(RequestStatus.FAILED, error="ValueError: bad input")
    final = entry(b"ValueError: bad input", type="error", errorType="ValueError", errorModule="builtins")

    result = task_meta("r1", state, final)["result"]

    assert type(result) is ValueError and str(result) == "bad input"


@pytest.mark.parametrize(
    ("state", "expected_type", "message"),
    [
        (request(RequestStatus.FAILED, "command", error="command exited with code 3", exit_code=3), CommandFailed,
         "command exited with code 3"),
        (request(RequestStatus.FAILED, "command", error="timed out after 2 s", exit_code=143), CommandFailed,
         "timed out after 2 s (exit code 143)"),
        (request(RequestStatus.FAILED, error="model server answered HTTP 500"), HandlerError,
         "model server answered HTTP 500"),
    ],
    ids=["exit-code", "timeout", "query"],
)  # fmt: skip
def test_a_failure_without_an_exception_type_is_ours(state: RequestState, expected_type: type, message: str) -> None:
    result = task_meta("r1", state, None)["result"]

    assert type(result) is expected_type and str(result) == message


def test_a_cancelled_request_is_revoked_with_how_it_was_cancelled() -> None:
    meta = task_meta("r1", request(RequestStatus.CANCELLED, error="cancelled while running"), None)

    assert meta["status"] == states.REVOKED
    assert isinstance(meta["result"], TaskRevokedError) and str(meta["result"]) == "cancelled while running"
