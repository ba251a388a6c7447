"""Requests the guarded protocol (uvicorn_internals.py) answers from their whole bytes, without an ASGI cycle.

A put is the front end's hot path, and a small one: head and body in one or two reads. uvicorn serves each request
through an ASGI cycle (a scope, a task, receive and send messages, a response head checked header by header),
which cost the front end about a sixth of its CPU per put (issue 26). An app that names such a request's route
(`whole_request_route`, from its head: the app takes only bodies of a declared size it accepts) is handed its bytes
once the body is in, and returns the answer (`answer_whole_request`); every other request goes through ASGI as
before. While the body comes, each piece must come within security.http.body_timeout_seconds (else 408, as the app
answers a stalled body), and the whole request within its deadline. Keep-alive, pipelining, the guards' timers and
caps and a graceful shutdown see the whole request through the object that stands where uvicorn keeps a cycle.
"""

from __future__ import annotations

import functools
import re
from http import HTTPStatus
from typing import Protocol

Header = tuple[bytes, bytes]
Answer = tuple[int, list[Header], bytes]  # status, headers (no content-length: it is added), body
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # a header value may not break its line


class WholeRequestApp(Protocol):
    """What an ASGI app offers to answer some requests from their whole bytes."""

    def whole_request_route(self, method: bytes, target: bytes, headers: list[Header]) -> str | None:
        """What the app will answer this request as (its own key), or None to serve it through ASGI."""

    async def answer_whole_request(self, route: str, target: bytes, headers: list[Header], body: bytes) -> Answer:
        """The answer; errors are answers too (an exception is logged and answered 500)."""


class _Unwaited:
    """A whole request's stand-in for its cycle's message event: nothing waits on it."""

    def set(self) -> None:
        pass


class WholeRequest:
    """Stands where uvicorn keeps a request's ASGI cycle (`protocol.cycle`) while the app answers a whole request:
    the fields that uvicorn and the guards read and set (a lost connection, a graceful shutdown, an answer)."""

    __slots__ = ("disconnected", "keep_alive", "message_event", "response_complete", "response_started")

    def __init__(self) -> None:
        self.disconnected = False
        self.keep_alive = True  # a shutdown clears it: the answer then closes the connection
        self.response_started = False
        self.response_complete = False
        self.message_event = _Unwaited()


@functools.cache
def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode("ascii")


def stalled_body_text(timeout_s: float) -> str:
    """The answer (408) to a body of which no piece came within `timeout_s`."""
    return f"the request body stalled: nothing came for {timeout_s:g} s (security.http.body_timeout_seconds)"


def closes(answer: Answer) -> bool:
    """Whether the answer says that it ends the connection."""
    return any(name.lower() == b"connection" and value.lower() == b"close" for name, value in answer[1])


def answer_bytes(answer: Answer, server_headers: list[Header], *, close: bool) -> bytes:
    """The HTTP/1.1 response, after the server's own headers (uvicorn's Date and Server); ValueError for a header
    that would break its line."""
    status, headers, body = answer
    parts = [_status_line(status), *(part for name, value in server_headers for part in (name, b": ", value, b"\r\n"))]
    for name, value in headers:
        if _BAD_VALUE.search(name) or _BAD_VALUE.search(value) or b":" in name:
            raise ValueError(f"invalid response header {name!r}: {value!r}")
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(body))
    if close and not closes(answer):
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)
