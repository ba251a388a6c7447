"""What a connection may hold of the front end, over real sockets: head size (431) and time (slowloris), body size
(chunked too) and pace, idle connections, the watcher cap (the connection caps: test_connection_caps.py; a whole
request's time: test_request_deadline.py); HEAD never deletes; a Redis that refuses writes is a 503 that tells
nothing of Redis; and random bad requests never get a 5xx."""

from __future__ import annotations

import random
import socket
import time

import httpx
import pytest
import raw_http
from raw_http import read_until_closed, request_head
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import service_config, wait_until
from scalablejob.frontend import queues
from scalablejob.model import keys

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVICE = "guarded"
HEAD_LIMIT = 2048
HEAD_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
SLACK_S = 2.0  # how much later than its timeout a connection may be closed


def limited_config(**http: object) -> dict:
    limits = {"max_header_bytes": HEAD_LIMIT, "header_timeout_seconds": HEAD_TIMEOUT_S,
              "body_timeout_seconds": BODY_TIMEOUT_S, "keep_alive_seconds": 1, "max_watchers_per_token": 1,
              **http}  # fmt: skip
    return {**service_config(SERVICE), "queue": {"max_payload_bytes": 1000}, "security": {"http": limits}}


def open_socket(served) -> socket.socket:
    return raw_http.open_socket(served.endpoint)


@pytest.fixture
def served(serve):
    return serve(limited_config())


@pytest.mark.parametrize("upgrade", [False, True], ids=["plain", "websocket-upgrade"])
def test_a_head_over_the_limit_gets_431_and_is_closed(served, upgrade):
    ws = ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
          "Sec-WebSocket-Version: 13"] if upgrade else []  # fmt: skip
    with open_socket(served) as sock:
        sock.sendall(request_head(f"/api/predict/{SERVICE}/sink?_watch_=true", *ws, "X-Big: " + "a" * 9000))
        answer, took = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"security.http.max_header_bytes" in answer and took < 5


def test_a_websocket_head_the_websockets_library_would_refuse_gets_431_not_a_hang(serve):
    # a head under the front end's limit, with one line over the websockets library's 8192 bytes
    served = serve(limited_config(max_header_bytes=32768))
    with open_socket(served) as sock:
        sock.sendall(request_head(f"/api/predict/{SERVICE}/sink?_watch_=true", "Upgrade: websocket",
                                  "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                  "Sec-WebSocket-Version: 13", "X-Line: " + "a" * 8190))  # fmt: skip
        answer, took = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ") and took < 5


def test_a_slowloris_connection_is_closed_within_the_head_timeout(served):
    # given a client that sends a head one byte at a time, never finishing it
    head = request_head(f"/api/predict/{SERVICE}/sink", "X-Slow: " + "a" * 200)
    with open_socket(served) as sock:
        started, closed = time.monotonic(), False
        for byte in head[:-4]:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if time.monotonic() - started > HEAD_TIMEOUT_S + SLACK_S:
                break
            time.sleep(0.05)
        answer, _ = read_until_closed(sock, timeout_s=HEAD_TIMEOUT_S + SLACK_S)
        took = time.monotonic() - started
    # then the server answered 408 and closed it within the timeout, however steadily the bytes came
    assert closed or answer.startswith(b"HTTP/1.1 408 "), answer
    assert took < HEAD_TIMEOUT_S + SLACK_S


def test_a_connection_that_sends_nothing_is_closed_within_the_head_timeout(served):
    with open_socket(served) as sock:
        answer, took = read_until_closed(sock, timeout_s=HEAD_TIMEOUT_S + SLACK_S + 1)
    assert answer.startswith(b"HTTP/1.1 408 ") and took < HEAD_TIMEOUT_S + SLACK_S


def test_a_stalled_body_gets_408(served):
    with open_socket(served) as sock:
        sock.sendall(f"POST /api/predict/{SERVICE}?taskType=query HTTP/1.1\r\nHost: x\r\nAuthorization: "
                     f"{served.token()}\r\nContent-Length: 100\r\n\r\n0123456789".encode())  # fmt: skip
        answer, took = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"stalled" in answer and took < BODY_TIMEOUT_S + SLACK_S


def test_a_chunked_body_over_the_limit_gets_413_and_enqueues_nothing(served, redis_client):
    # given a chunked body that announces far more than the limit and sends it in pieces
    with open_socket(served) as sock:
        sock.sendall(f"POST /api/predict/{SERVICE}?taskType=query HTTP/1.1\r\nHost: x\r\nAuthorization: "
                     f"{served.token()}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())  # fmt: skip
        try:
            for _ in range(50):
                sock.sendall(b"3e8\r\n" + b"x" * 1000 + b"\r\n")  # 1000 bytes a chunk, the whole limit each
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, _ = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"limit of 1000 bytes" in answer
    assert not redis_client.exists(keys.input_index_counter(SERVICE))


def test_watchers_beyond_the_cap_of_a_token_get_429(served):
    url = f"ws://{served.endpoint}/api/predict/{SERVICE}/sink?_watch_=true"
    auth = {"Authorization": served.token()}
    first = connect(url, additional_headers={**auth, "X-EAS-QueueService-Redis-Uid": "one"}, open_timeout=10)
    with first, pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={**auth, "X-EAS-QueueService-Redis-Uid": "two"}, open_timeout=10)
    assert refused.value.response.status_code == 429
    assert b"security.http.max_watchers_per_token" in refused.value.response.body

    # once the first is gone (the server sees its close a moment later), another may connect
    def another_connects() -> bool:
        try:
            with connect(url, additional_headers={**auth, "X-EAS-QueueService-Redis-Uid": "three"}, open_timeout=10):
                return True
        except InvalidStatus as exc:
            if exc.response.status_code != 429:
                raise
            return False

    wait_until(another_connects, 10, "a watcher's slot given back once it closed")


def test_head_never_deletes_an_output_item_or_withdraws_a_request(served, redis_client):
    with httpx.Client(base_url=served.url, headers={"Authorization": served.token()}, timeout=30) as http:
        http.post(f"/api/predict/{SERVICE}/sink", content=b"result")
        http.post(f"/api/predict/{SERVICE}", params={"taskType": "query"}, content=b"q")
        for queue in (f"{SERVICE}/sink", SERVICE):
            head = http.head(f"/api/predict/{queue}", params={"_auto_delete_": "true", "_index_": "1"})
            assert head.status_code == 200 and head.content == b""
        sink = http.get(f"/api/predict/{SERVICE}/sink", params={"_attrs_": "true"}).json()
        inputs = http.get(f"/api/predict/{SERVICE}", params={"_attrs_": "true"}).json()
        searched = http.get(f"/api/predict/{SERVICE}", params={"_search_": "true", "_index_": "1"}).json()
    assert sink["stream.length"] == "1" and inputs["stream.length"] == "1"
    assert searched["cancelRequested"] is False and searched["state"] == "queued"


def test_a_redis_that_refuses_writes_is_a_503_that_tells_nothing_of_redis(served, redis_client, caplog):
    redis_client.config_set("maxmemory", 1)  # every write is refused: OOM
    try:
        with httpx.Client(base_url=served.url, headers={"Authorization": served.token()}, timeout=30) as http:
            refused = [http.post(f"/api/predict/{SERVICE}", params={"taskType": "query"}, content=b"q"),
                       http.post(f"/api/predict/{SERVICE}/sink", content=b"r")]  # fmt: skip
    finally:
        redis_client.config_set("maxmemory", 0)
    for answer in refused:
        assert answer.status_code == 503, answer.text
        assert "broker is unavailable or refused" in answer.text
        assert not any(word in answer.text for word in ("OOM", "maxmemory", "redis", "Redis", "127.0.0.1"))
    assert "OOM" in caplog.text  # the detail went to the log


def test_random_bad_requests_never_get_a_5xx(served):
    rng = random.Random(1414)
    names = ["_index_", "_length_", "_timeout_", "_raw_", "_auto_delete_", "_attrs_", "_search_", "_watch_",
             "_indexes_", "_trunc_", "_priority_", "taskType", "requestId", "task", "type"]  # fmt: skip
    values = ["", "0", "-1", "1", "true", "false", "5s", "2h", "1,2", "a b", "\u00e9", "9" * 30, "query", "command"]
    statuses = []
    with httpx.Client(base_url=served.url, timeout=30) as http:
        for _ in range(300):
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"])
            queue = rng.choice([SERVICE, f"{SERVICE}/sink", "nope", f"{SERVICE}/x", "%2e%2e", ""])
            params = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randint(0, 4))]
            token = rng.choice([served.token(), "", "guess", "x" + served.token()])
            body = rng.choice([b"", b"x", b"x" * 1001, bytes(rng.getrandbits(8) for _ in range(50))])
            answer = http.request(method, f"/api/predict/{queue}", params=params, content=body,
                                  headers={"Authorization": token} if token else {})  # fmt: skip
            statuses.append(answer.status_code)
    assert all(status < 500 for status in statuses), sorted(set(statuses))


def test_a_put_the_broker_does_not_answer_gets_503_at_its_deadline(served, redis_client, monkeypatch):
    # given a put deadline of half a second, and a broker that holds every write for longer (CLIENT PAUSE)
    monkeypatch.setattr(queues, "PUT_TIMEOUT_S", 0.5)
    with httpx.Client(base_url=served.url, headers={"Authorization": served.token()}, timeout=30) as http:
        http.post(f"/api/predict/{SERVICE}", params={"taskType": "query"}, content=b"warm")  # connections made
        redis_client.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
        try:
            started = time.monotonic()
            answer = http.post(f"/api/predict/{SERVICE}", params={"taskType": "query"}, content=b"q")
            took = time.monotonic() - started
        finally:
            redis_client.execute_command("CLIENT", "UNPAUSE")
    # then it is answered 503 at the deadline, as the SDK retries, instead of waiting on the broker
    assert answer.status_code == 503 and "broker is unavailable" in answer.text, answer.text
    assert 0.4 <= took < 2.5
