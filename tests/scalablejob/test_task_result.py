"""A task's value and exception as a result entry carries them, and back, as `.get()` gives them."""

from __future__ import annotations

from typing import Any

import pytest

from scalablejob.model.errors import ConfigError, HandlerError
from scalablejob.model.task_result import (
    command_failure,
    decode_value,
    encode_value,
    encoding_tags,
    error_message,
    error_tags,
    error_text,
    rebuild_exception,
)


@pytest.mark.parametrize(
    ("value", "data", "encoding"),
    [
        (b"\x00raw", b"\x00raw", "bytes"),
        (bytearray(b"array"), b"array", "bytes"),
        ("tëxt", "tëxt".encode(), "text"),
        (None, b"", "none"),
        ({"loss": 0.5}, b'{"loss": 0.5}', "json"),
        ([1, "two"], b'[1, "two"]', "json"),
        (3, b"3", "json"),
        (False, b"false", "json"),
    ],
    ids=["bytes", "bytearray", "text", "none", "dict", "list", "int", "bool"],
)
def test_a_value_round_trips_through_its_entry(value: Any, data: bytes, encoding: str) -> None:
    assert encode_value(value) == (data, encoding)
    assert decode_value(data, encoding) == (bytes(value) if isinstance(value, bytearray) else value)


def test_plain_bytes_add_no_tag_so_existing_answers_keep_their_tags() -> None:
    assert encoding_tags("bytes") == {}
    assert encoding_tags("json") == {"resultEncoding": "json"}
    assert decode_value(b"old entry", None) == b"old entry"


def test_a_value_without_bytes_is_a_handler_error_naming_its_type() -> None:
    with pytest.raises(HandlerError, match=r"^training task returned set: expected bytes, str, None or JSON"):
        encode_value({1, 2}, "training task")


def test_an_exception_travels_as_its_type_module_and_text() -> None:
    exc = KeyError("missing")

    assert error_text(ValueError("bad lr")) == "ValueError: bad lr"
    assert error_tags(exc) == {"errorType": "KeyError", "errorModule": "builtins"}
    assert error_message("ValueError: bad lr", "ValueError") == "bad lr"
    assert error_message("model server answered HTTP 500", "HandlerError") == "model server answered HTTP 500"


class LocalError(Exception):
    """An exception of a module the caller has imported (this one)."""


@pytest.mark.parametrize(
    ("type_name", "module", "expected_type"),
    [
        ("ValueError", "builtins", ValueError),
        ("HandlerError", "scalablejob.model.errors", HandlerError),
        ("LocalError", __name__, LocalError),
    ],
)
def test_a_known_exception_comes_back_as_itself(type_name: str, module: str, expected_type: type) -> None:
    exc = rebuild_exception(type_name, module, "its message")

    assert type(exc) is expected_type and str(exc) == "its message"


@pytest.mark.parametrize(
    ("type_name", "module"),
    [("DivergedError", "never_imported_module"), ("ConfigError", "scalablejob.model.errors"), ("print", "builtins")],
    ids=["unknown-module", "needs-more-arguments", "not-an-exception"],
)
def test_an_exception_that_cannot_be_made_here_comes_back_as_a_class_of_the_same_name(
    type_name: str, module: str
) -> None:
    exc = rebuild_exception(type_name, module, "its message")

    assert type(exc).__name__ == type_name and type(exc).__module__ == module
    assert isinstance(exc, Exception) and str(exc) == "its message"
    assert type(exc) is not ConfigError


@pytest.mark.parametrize(
    ("error", "exit_code", "expected"),
    [
        ("command exited with code 3", 3, "command exited with code 3"),
        ("timed out after 5 s", 143, "timed out after 5 s (exit code 143)"),
        ("ValueError: bad lr", 1, "ValueError: bad lr (exit code 1)"),
        ("failed", None, "failed"),
    ],
)
def test_a_command_failure_says_its_exit_code_once(error: str, exit_code: int | None, expected: str) -> None:
    assert command_failure(error, exit_code) == expected
