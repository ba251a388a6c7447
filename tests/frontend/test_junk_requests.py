"""Junk on the front end's port, against a real `scalablejob frontend` process: bytes that are not HTTP, broken
HTTP, bodies cut short or broken while they are read, bad bytes after an answer. Each gets a 4xx or a close, and
costs at most one short line of the log, never a traceback; the front end goes on serving."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass

import httpx
import pytest
from raw_http import hang_up, open_socket, read_head, read_until_closed

from conftest import service_config

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = "junk"
TOKEN = "junk-token"
POST = f"POST /api/predict/{SERVICE}?taskType=query HTTP/1.1\r\nHost: x\r\n".encode()
AUTH = f"Authorization: {TOKEN}\r\n".encode()
NOWHERE = b"POST /nowhere HTTP/1.1\r\nHost: x\r\n"
_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3}) ")


def tls_client_hello() -> bytes:
    """The first bytes a TLS client sends: what a client configured for https sends to the plain port."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@dataclass(frozen=True)
class Junk:
    """What a client sends: `first`; once the answer's head is in, `then` (if any); and whether it then hangs up
    at once (a client gone mid-request) instead of reading until the server closes."""

    first: bytes
    then: bytes = b""
    hangs_up: bool = False


JUNK = {
    "not-http": Junk(b"\x00\x01\x02garbage\r\n\r\n"),
    "tls-client-hello": Junk(b""),  # filled in by the test: the hello is made at run time
    "http2-preface": Junk(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    "bad-request-line": Junk(b"GET\r\n\r\n"),
    "non-ascii-target": Junk("GET /api/predict/jünk HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
    "nul-in-header": Junk(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \x00\x01\r\n\r\n"),
    "header-without-colon": Junk(b"GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n"),
    "absurd-content-length": Junk(POST + AUTH + b"Content-Length: 99999999999999999999999\r\n\r\n"),
    "two-content-lengths": Junk(POST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
    "unknown-transfer-encoding": Junk(POST + b"Transfer-Encoding: gzip\r\n\r\n"),
    "body-cut-short": Junk(POST + AUTH + b"Content-Length: 100\r\n\r\nabc", hangs_up=True),
    "expect-continue-then-gone": Junk(
        POST + AUTH + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n", hangs_up=True
    ),
    "broken-chunk-while-read": Junk(POST + AUTH + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
    "broken-chunk-after-401": Junk(POST + b"Transfer-Encoding: chunked\r\n\r\n", then=b"zz\r\n"),
    "broken-chunk-after-404": Junk(NOWHERE + b"Transfer-Encoding: chunked\r\n\r\n", then=b"f" * 24 + b"\r\n"),
}


def send(endpoint: str, junk: Junk) -> int | None:
    """The status the junk was answered with, or None for a close without an answer."""
    with open_socket(endpoint) as sock:
        sock.sendall(junk.first)
        if junk.hangs_up:
            hang_up(sock)
            return None
        answer = read_head(sock) if junk.then else b""
        if junk.then:
            sock.sendall(junk.then)
        answer += read_until_closed(sock)[0]
    status = _STATUS.match(answer)
    return int(status.group(1)) if status else None


def test_junk_gets_a_4xx_or_a_close_and_at_most_a_log_line_each_never_a_traceback(start_frontend):
    # given a front end process (uvicorn's own logging, as `scalablejob up` runs it)
    config = {**service_config(SERVICE), "security": {"http": {"keep_alive_seconds": 1}}}
    frontend = start_frontend(config, env={"SCALABLEJOB_FRONTEND_TOKEN": TOKEN})
    url, _ = frontend.started()
    endpoint = url.removeprefix("http://")
    junk = {**JUNK, "tls-client-hello": Junk(tls_client_hello())}

    # when each piece of junk comes on a connection of its own
    answered = {name: send(endpoint, piece) for name, piece in junk.items()}

    # then each got a 4xx or a close, and a good request is still served
    assert all(status is None or 400 <= status < 500 for status in answered.values()), answered
    good = httpx.get(f"{url}/api/predict/{SERVICE}", params={"_attrs_": "true"}, headers={"Authorization": TOKEN})
    assert good.status_code == 200
    assert frontend.stop() == 0
    log = frontend.log()
    served = log.split("Application startup complete.", 1)[1].split("Shutting down", 1)[0]
    assert "Traceback" not in log and "Exception in ASGI application" not in log and "Fatal error" not in log, log
    assert len(served.strip().splitlines()) <= len(junk), served
