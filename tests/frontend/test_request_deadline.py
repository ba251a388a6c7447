"""A whole request (head and body) must arrive within security.http.request_timeout_seconds, plus a second for
every min_request_rate_bytes_per_second bytes received: a body dripped a byte at a time gets 408 and is closed at
the deadline, however steadily the bytes come; one dripped after its request was answered is closed; a large body
that keeps the minimum rate is never cut. Real sockets against the front end served by uvicorn."""

from __future__ import annotations

import math
import socket
import time

import pytest
from raw_http import open_socket, read_head, read_until_closed

from conftest import service_config

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = "deadline"
REQUEST_TIMEOUT_S = 2.0
SLACK_S = 1.5  # how much later than its deadline a connection may be closed
DRIP_EVERY_S = 0.2  # well within body_timeout_seconds: no single wait is long, only the whole


def deadline_config(**http: object) -> dict:
    limits = {"request_timeout_seconds": REQUEST_TIMEOUT_S, "body_timeout_seconds": 30, "header_timeout_seconds": 30,
              **http}  # fmt: skip
    return {**service_config(SERVICE), "security": {"http": limits}}


def post_head(length: int, token: str | None) -> bytes:
    auth = f"Authorization: {token}\r\n" if token else ""
    return (f"POST /api/predict/{SERVICE}?taskType=query HTTP/1.1\r\nHost: x\r\n{auth}"
            f"Content-Length: {length}\r\n\r\n").encode()  # fmt: skip


def drip_until_closed(sock: socket.socket, started: float, limit_s: float) -> tuple[bytes, float]:
    """Send a byte every DRIP_EVERY_S until the server closes the connection; what it sent meanwhile, and how long
    after `started` it closed (inf: not within `limit_s`)."""
    received = b""
    sock.settimeout(DRIP_EVERY_S)
    while time.monotonic() - started < limit_s:
        try:
            sock.sendall(b"x")
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            chunk = b""
        if not chunk:
            return received, time.monotonic() - started
        received += chunk
    return received, math.inf


def test_a_body_dripped_a_byte_at_a_time_gets_408_at_the_request_deadline(serve):
    served = serve(deadline_config(min_request_rate_bytes_per_second=0))
    started = time.monotonic()
    with open_socket(served.endpoint) as sock:
        # given a put whose body comes a byte every DRIP_EVERY_S, each byte well within the body timeout
        sock.sendall(post_head(1000, served.token()))
        answer, closed_after = drip_until_closed(sock, started, REQUEST_TIMEOUT_S + SLACK_S)
    # then the front end answered 408 and closed it at the deadline
    assert answer.startswith(b"HTTP/1.1 408 ") and b"security.http.request_timeout_seconds" in answer, answer
    assert REQUEST_TIMEOUT_S - 0.1 <= closed_after < REQUEST_TIMEOUT_S + SLACK_S


def test_a_body_dripped_after_its_request_was_answered_is_closed_at_the_deadline(serve):
    served = serve(deadline_config())
    started = time.monotonic()
    with open_socket(served.endpoint) as sock:
        # given a put without a token, answered 401 before its body, which then comes a byte at a time
        sock.sendall(post_head(1000, None))
        answered = read_head(sock)
        more, closed_after = drip_until_closed(sock, started, REQUEST_TIMEOUT_S + SLACK_S)
    # then the connection was closed at the deadline, with no second answer
    assert answered.startswith(b"HTTP/1.1 401 ") and b"HTTP/1.1 " not in more
    assert REQUEST_TIMEOUT_S - 0.1 <= closed_after < REQUEST_TIMEOUT_S + SLACK_S


def test_a_large_body_that_keeps_the_minimum_rate_is_not_cut(serve):
    # given a deadline of 1 s, extended by a second for each 2000 bytes received
    served = serve(deadline_config(request_timeout_seconds=1, min_request_rate_bytes_per_second=2000))
    body = b"y" * 6000
    with open_socket(served.endpoint) as sock:
        # when a body of 6000 bytes comes at about 3000 bytes a second, for 2 s in all
        sock.sendall(post_head(len(body), served.token()))
        for offset in range(0, len(body), 300):
            sock.sendall(body[offset : offset + 300])
            time.sleep(0.1)  # the pace under test, not a wait for the server
        answer = read_head(sock)
    # then it was taken
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def test_a_connection_whose_unread_body_came_after_its_answer_closes_when_idle_for_the_keep_alive(serve):
    served = serve(deadline_config(keep_alive_seconds=1))
    with open_socket(served.endpoint) as sock:
        # given a put answered 401 before its body, whose body then comes whole
        sock.sendall(post_head(5, None))
        answered = read_head(sock)
        sock.sendall(b"abcde")
        # then the connection, idle from then on, is closed after keep_alive_seconds, with no second answer
        more, took = read_until_closed(sock, timeout_s=REQUEST_TIMEOUT_S + SLACK_S)
    assert answered.startswith(b"HTTP/1.1 401 ") and b"HTTP/1.1 " not in more
    assert took < 1 + SLACK_S
