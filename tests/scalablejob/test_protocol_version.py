"""The protocol version's compatibility rule: which message versions a worker runs, and what it says of the others."""

from __future__ import annotations

import pytest

from scalablejob.model.protocol import (
    PROTOCOL_VERSION,
    Unhandled,
    handled_range,
    message_verdict,
    oldest_handled,
    version_of,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 1),  # a message or record of a release before versions
        (1, 1),
        (7, 7),
        ("3", 3),  # a record's field is text
        (b"2", 2),
        (0, None),
        (-1, None),
        (True, None),  # JSON's true is no version
        ("2.0", None),
        ("two", None),
        ([2], None),
    ],
)
def test_version_of(value: object, expected: int | None) -> None:
    assert version_of(value) == expected


@pytest.mark.parametrize(("own", "oldest", "shown"), [(1, 1, "1"), (2, 1, "1-2"), (5, 4, "4-5")])
def test_a_worker_runs_its_own_version_and_the_previous_one(own: int, oldest: int, shown: str) -> None:
    assert (oldest_handled(own), handled_range(own)) == (oldest, shown)


TOO_NEW_ARGUMENTS = (
    "arguments this worker's task does not take (got an unexpected keyword argument 'deadline'), at protocol 1"
)


@pytest.mark.parametrize(
    ("header", "argument_error", "own", "expected"),
    [
        (None, None, 1, None),  # the last release's messages run on this one
        (1, None, 1, None),
        (1, None, 2, None),  # the previous version's messages run on the next release
        (2, None, 2, None),
        (2, None, 1, Unhandled("protocol version 2, newer than this worker's 1", 2)),
        (None, None, 3, Unhandled("protocol version 1, older than this worker's 2-3", 1)),
        ("x", None, 1, Unhandled("unreadable protocol version 'x' (this worker runs 1)", None)),
        (None, "got an unexpected keyword argument 'deadline'", 1, Unhandled(TOO_NEW_ARGUMENTS, 1)),
        (2, "too many positional arguments", 1, Unhandled("protocol version 2, newer than this worker's 1", 2)),
    ],
)
def test_message_verdict(header: object, argument_error: str | None, own: int, expected: Unhandled | None) -> None:
    assert message_verdict(header, argument_error, own) == expected


def test_this_release_writes_a_version_its_workers_run() -> None:
    assert message_verdict(PROTOCOL_VERSION, None) is None
