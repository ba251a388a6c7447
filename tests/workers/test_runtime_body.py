"""A query handler's return value as the exact bytes of its result entry."""

from __future__ import annotations

from typing import Any

import pytest

from scalablejob.model.errors import HandlerError
from scalablejob.workers.runtime import response_body


@pytest.mark.parametrize(
    ("value", "body"),
    [
        (b"\x00\xffraw", b"\x00\xffraw"),
        (b"", b""),
        (bytearray(b"array"), b"array"),
        (memoryview(b"view"), b"view"),
        ("text ünï", "text ünï".encode()),
        ("", b""),
        (None, b""),
        ({"label": "cat", "score": 0.5}, b'{"label": "cat", "score": 0.5}'),
        ([1, "two", None], b'[1, "two", null]'),
        (42, b"42"),
        (1.5, b"1.5"),
        (True, b"true"),
    ],
    ids=[
        "bytes",
        "empty-bytes",
        "bytearray",
        "memoryview",
        "str",
        "empty-str",
        "none",
        "dict",
        "list",
        "int",
        "float",
        "bool",
    ],
)
def test_response_body(value: Any, body: bytes) -> None:
    result = response_body(value)

    assert result == body
    assert type(result) is bytes


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Opaque(), "Opaque"),
        ({1, 2}, "set"),
        ({"nested": object()}, "dict"),
        (b"x".decode, "builtin_function_or_method"),
    ],
)
def test_response_body_of_unserializable_data_raises_naming_its_type(value: Any, type_name: str) -> None:
    with pytest.raises(HandlerError) as caught:
        response_body(value)

    assert str(caught.value) == (
        f"query handler returned {type_name}: expected bytes, str, None or JSON-serializable data"
    )
