"""One client holding connections cannot starve the others: a client (a peer address) holds at most
security.http.max_connections_per_client HTTP connections and all clients at most max_connections; a newcomer over
a cap takes the place of the connection idle longest, and only when every connection in its way is serving a
request is it answered 503 with Retry-After and closed. Real sockets from several loopback addresses (127.0.0.x)
against the front end served by uvicorn."""

from __future__ import annotations

import httpx
import pytest
from raw_http import open_socket, read_head, read_until_closed, still_open

from conftest import service_config

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = "capped"
PER_CLIENT = 3
HOG, OTHER, THIRD = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def capped_config(**http: object) -> dict:
    limits = {"max_connections_per_client": PER_CLIENT, "max_connections": 50, "header_timeout_seconds": 30,
              "body_timeout_seconds": 30, "request_timeout_seconds": 30, **http}  # fmt: skip
    return {**service_config(SERVICE), "security": {"http": limits}}


def busy_connection(served, source: str):
    """A connection serving a request: a put whose body the front end is waiting for (it asked for it: 100)."""
    sock = open_socket(served.endpoint, source)
    sock.sendall(f"POST /api/predict/{SERVICE}?taskType=query HTTP/1.1\r\nHost: x\r\nAuthorization: {served.token()}"
                 "\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n".encode())  # fmt: skip
    assert read_head(sock).startswith(b"HTTP/1.1 100 ")
    return sock


def served_from(served, source: str) -> int:
    """The status of a read of the queue's attributes, by a client at `source`."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=served.url, transport=transport, timeout=10) as http:
        answer = http.get(
            f"/api/predict/{SERVICE}", params={"_attrs_": "true"}, headers={"Authorization": served.token()}
        )
    return answer.status_code


def close_all(socks) -> None:
    for sock in socks:
        sock.close()


def test_a_client_whose_connections_are_all_busy_gets_503_while_another_client_is_served(serve):
    served = serve(capped_config())
    # given a client holding as many connections as one client may, each serving a request
    held = [busy_connection(served, HOG) for _ in range(PER_CLIENT)]
    try:
        # when it opens one more
        with open_socket(served.endpoint, HOG) as extra:
            refused, took = read_until_closed(extra)
        # then that one is answered 503 at once, with Retry-After, naming the setting
        assert refused.startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 1\r\n" in refused and took < 5
        assert b"security.http.max_connections_per_client" in refused
        # and another client is served all the same, while the first one's requests go on
        assert served_from(served, OTHER) == 200
        assert all(still_open(sock) for sock in held)
    finally:
        close_all(held)


def test_a_clients_idle_connections_make_room_for_its_next_one_longest_idle_first(serve):
    served = serve(capped_config())
    # given a client holding as many connections as one client may, sending nothing on them
    held = [open_socket(served.endpoint, HOG) for _ in range(PER_CLIENT)]
    try:
        # when the same address (as every local client is, on loopback) sends a request
        assert served_from(served, HOG) == 200
        # then the connection idle longest was closed without an answer to make room, and the others were not
        assert read_until_closed(held[0], timeout_s=5)[0] == b""
        assert all(still_open(sock) for sock in held[1:])
    finally:
        close_all(held)


def test_when_all_clients_together_hold_the_cap_an_idle_connection_of_any_makes_room(serve):
    served = serve(capped_config(max_connections=4))
    # given two clients holding the cap for all between them: one idle connection, three busy
    idle = open_socket(served.endpoint, OTHER)
    held = [busy_connection(served, HOG), busy_connection(served, HOG), busy_connection(served, OTHER)]
    try:
        # when a third client sends a request, it is served in the idle connection's place
        assert served_from(served, THIRD) == 200
        assert read_until_closed(idle, timeout_s=5)[0] == b""
        # and once every connection is busy, a newcomer is refused, naming the cap for all
        held.append(busy_connection(served, OTHER))
        with open_socket(served.endpoint, THIRD) as extra:
            refused, _ = read_until_closed(extra)
        assert refused.startswith(b"HTTP/1.1 503 ") and b"security.http.max_connections)" in refused, refused
    finally:
        close_all([idle, *held])
