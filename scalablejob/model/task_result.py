"""A task's return value and exception as a result entry carries them, and back. Pure; no I/O.

The entry's data stays exactly the response body (bytes as is, text as UTF-8, data as JSON), as the queue service
protocol wants; the tag `resultEncoding` says how to give the value back to Python (`.get()`): `text`, `json` or
`none`, and no tag means bytes. A failure's exception travels as the tags `errorType` and `errorModule` beside its
`Type: message` error text, so `.get()` raises the same type with the same message.
"""

from __future__ import annotations

import builtins
import json
import sys
from typing import Any

from scalablejob.model import errors
from scalablejob.model.errors import HandlerError

RESULT_ENCODING_TAG = "resultEncoding"
ERROR_TYPE_TAG = "errorType"
ERROR_MODULE_TAG = "errorModule"

BYTES, TEXT, JSON, NONE = "bytes", "text", "json", "none"


def encode_value(value: Any, returned_by: str = "task") -> tuple[bytes, str]:
    """A task's return value as response bytes and their encoding; HandlerError for a value that has no bytes."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), BYTES
    if isinstance(value, str):
        return value.encode("utf-8"), TEXT
    if value is None:
        return b"", NONE
    try:
        return json.dumps(value).encode("utf-8"), JSON
    except (TypeError, ValueError):
        raise HandlerError(
            f"{returned_by} returned {type(value).__name__}: expected bytes, str, None or JSON-serializable data"
        ) from None


def encoding_tags(encoding: str) -> dict[str, str]:
    """The tags a result entry gets for its encoding: none for bytes, so plain answers keep their plain tags."""
    return {} if encoding == BYTES else {RESULT_ENCODING_TAG: encoding}


def decode_value(data: bytes, encoding: str | None) -> Any:
    """The Python value of a result entry's data (the inverse of encode_value)."""
    if encoding == TEXT:
        return data.decode("utf-8", "replace")
    if encoding == JSON:
        return json.loads(data)
    if encoding == NONE:
        return None
    return data


def error_text(exc: BaseException) -> str:
    """How a failure reads in the request's state and error entry: `Type: message`."""
    return f"{type(exc).__name__}: {exc}"


def error_tags(exc: BaseException) -> dict[str, str]:
    return {ERROR_TYPE_TAG: type(exc).__qualname__, ERROR_MODULE_TAG: type(exc).__module__}


def error_message(text: str, type_name: str) -> str:
    """The exception's own message inside its `Type: message` error text."""
    prefix = f"{type_name.rsplit('.', 1)[-1]}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def rebuild_exception(type_name: str, module: str, message: str) -> BaseException:
    """The exception a task raised, for the caller of `.get()`: the class itself when it is a builtin, one of ours,
    or in a module the caller has already imported (nothing is imported on the task's word); else a class made
    with the same name and module, as Celery does for exceptions it cannot import."""
    known = {"builtins": builtins, errors.__name__: errors}.get(module) or sys.modules.get(module)
    found: Any = known
    for part in type_name.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Exception):
        try:
            return found(message)
        except Exception:  # an exception class whose constructor wants more than a message
            pass
    made = type(type_name.rsplit(".", 1)[-1], (Exception,), {"__module__": module})
    return made(message)


def command_failure(error: str, exit_code: int | None) -> str:
    """A failed command's error with its exit code, said once (`command exited with code 3` already says it)."""
    if exit_code is None or f"code {exit_code}" in error:
        return error
    return f"{error} (exit code {exit_code})"
