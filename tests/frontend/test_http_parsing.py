"""How the front end's guarded protocol reads requests whose bytes do not come one request per read: several
requests in one write (pipelined: answered in order, a later one timed only once its turn comes), heads that come
in pieces (the 431 limit counted over the pieces, a head under it served), and a put whose body is still coming
when the server stops (answered, then closed). Real sockets against the front end served by uvicorn; they guard the
port of the guards from uvicorn's h11 protocol to its httptools one, and the puts answered from their whole bytes."""

from __future__ import annotations

import re
import socket
import time

import pytest
from raw_http import open_socket, read_head, read_until_closed, request_head

from conftest import service_config, wait_until

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = "parsing"
HEAD_LIMIT = 2048
REQUEST_TIMEOUT_S = 1.0
_ANSWER = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r]*\r\n(.*?)\r\n\r\n", re.DOTALL)


def parsing_config(**http: object) -> dict:
    limits = {"max_header_bytes": HEAD_LIMIT, "request_timeout_seconds": REQUEST_TIMEOUT_S,
              "header_timeout_seconds": 30, "body_timeout_seconds": 30, "keep_alive_seconds": 1, **http}  # fmt: skip
    return {**service_config(SERVICE), "security": {"http": limits}}


def put(token: str, body: bytes = b"{}") -> bytes:
    return (f"POST /api/predict/{SERVICE}?taskType=query HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip


def answers(received: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each answer in a stream of answers with content-length."""
    found, at = [], 0
    while (head := _ANSWER.search(received, at)) is not None:
        length = int(re.search(rb"content-length: (\d+)", head.group(2), re.IGNORECASE).group(1))
        found.append((int(head.group(1)), received[head.end() : head.end() + length]))
        at = head.end() + length
    return found


def read_answers(sock: socket.socket, count: int, timeout_s: float = 10) -> list[tuple[int, bytes]]:
    """The first `count` answers on a connection (fewer if it closes or `timeout_s` passes)."""
    received, deadline = b"", time.monotonic() + timeout_s
    sock.settimeout(0.2)
    while len(answers(received)) < count and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        received += chunk
    return answers(received)


def test_puts_pipelined_in_one_write_are_answered_in_order_on_one_connection(serve):
    served = serve(parsing_config())
    with open_socket(served.endpoint) as sock:
        sock.sendall(put(served.token(), b"a") + put(served.token(), b"b") + put(served.token(), b"c"))
        got = read_answers(sock, 3)
    assert got == [(200, b"1"), (200, b"2"), (200, b"3")]


def test_a_request_pipelined_behind_a_long_wait_is_timed_from_its_turn_not_from_its_arrival(serve):
    served = serve(parsing_config())
    wait_s = REQUEST_TIMEOUT_S + 1.0  # the first request is served for longer than a request may take to arrive
    first = request_head(f"/api/predict/{SERVICE}/sink?_timeout_={wait_s}s", f"Authorization: {served.token()}")
    body = b"late"
    with open_socket(served.endpoint) as sock:
        # given a get that waits for items, with a put's head right behind it in the same write
        sock.sendall(first + put(served.token(), body)[: -len(body)])
        started = time.monotonic()
        waited = read_answers(sock, 1, timeout_s=wait_s + 5)
        took = time.monotonic() - started
        # when the put's body comes once the get is answered, after the put's own deadline counted from its arrival
        sock.sendall(body)
        got = read_answers(sock, 1)
    # then the get ran its full wait (finding nothing) and the put was taken, not refused with 408
    assert [status for status, _ in waited] == [200] and took >= wait_s - 0.5, waited
    assert got == [(200, b"1")], got


def test_a_head_over_the_limit_that_comes_in_pieces_gets_431_before_it_ends(serve):
    served = serve(parsing_config())
    start = request_head(f"/api/predict/{SERVICE}", f"Authorization: {served.token()}")[:-2]  # no blank line yet
    with open_socket(served.endpoint) as sock:
        sock.sendall(start)
        refused = b""
        for n in range(HEAD_LIMIT // 100 + 5):  # header lines of 100 bytes, the head never finished
            try:
                sock.sendall(f"X-{n:04}: {'a' * 92}\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.01)  # a piece per read
        refused, _ = read_until_closed(sock)
    assert refused.startswith(b"HTTP/1.1 431 ") and b"security.http.max_header_bytes" in refused, refused


def test_a_head_just_under_the_limit_that_comes_in_pieces_is_served(serve):
    served = serve(parsing_config())
    head = put(served.token())[:-4]  # the head without its blank line (and the body)
    lines = [f"X-{n:04}: {'a' * 92}\r\n".encode() for n in range((HEAD_LIMIT - len(head) - 120) // 100)]
    whole = head + b"".join(lines) + b"\r\n"
    assert HEAD_LIMIT - 120 <= len(whole) <= HEAD_LIMIT
    with open_socket(served.endpoint) as sock:
        for offset in range(0, len(whole), 100):
            sock.sendall(whole[offset : offset + 100])
            time.sleep(0.01)  # a piece per read
        sock.sendall(b"{}")
        got = read_answers(sock, 1)
    assert got == [(200, b"1")], got


def refused(endpoint: str) -> bool:
    """Whether the server no longer takes connections (it has begun to stop)."""
    try:
        open_socket(endpoint, timeout_s=1).close()
    except OSError:
        return True
    return False


def test_a_put_whose_body_is_still_coming_when_the_server_stops_is_answered_then_closed(serve):
    served = serve(parsing_config())
    body = b"0123456789"
    with open_socket(served.endpoint) as sock:
        # given a put whose head and half of its body are in (its connection counted busy)
        sock.sendall(put(served.token(), body)[:-5])
        assert served.thread is not None
        book = served.thread.server.config.http.book  # the guarded protocol's, of this server
        wait_until(lambda: book.count("127.0.0.1") == 1 and book.oldest_idle() is None, 10, "the head read")
        # when the server is told to stop, and has stopped taking connections
        served.thread.server.should_exit = True
        wait_until(lambda: refused(served.endpoint), 10, "the server stops taking connections")
        # then the rest of the body is still read, and the put answered before the connection is closed
        sock.sendall(body[-5:])
        answer, took = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and took < 5, answer


def test_a_put_answer_carries_the_date_and_server_headers_as_every_answer_does(serve):
    served = serve(parsing_config())
    with open_socket(served.endpoint) as sock:
        sock.sendall(put(served.token()))  # head and body in one write: answered from its whole bytes
        head = read_head(sock).lower()
    assert head.startswith(b"http/1.1 200 ") and b"\r\ndate: " in head and b"\r\nserver: uvicorn\r\n" in head, head
