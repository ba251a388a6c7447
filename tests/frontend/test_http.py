"""Raw HTTP and websocket against a live front end: the seed's curl call, every kind of bad input, withdrawal."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import service_config
from scalablejob import RequestStatus
from scalablejob.frontend.protocol import decode_frame_list

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = "web"
TOKEN = "test-token"
AUTH = {"Authorization": TOKEN}
BODY_LIMIT = 1000


@pytest.fixture
def http(serve) -> Iterator[httpx.Client]:
    """An HTTP client of a front end serving `web` and `other` (both standalone, same token), body limit 1000."""
    served = serve(service_config(SERVICE), names=[SERVICE, "other"], token=None, max_body_bytes=BODY_LIMIT)
    headers = {"Authorization": served.token(SERVICE)}
    with httpx.Client(base_url=served.url, headers=headers, timeout=30) as client:
        client.other_token = served.token("other")  # type: ignore[attr-defined]
        yield client


def test_the_seed_curl_call_enqueues_a_request_whose_result_reaches_the_sink(serve, start_worker):
    served = serve(service_config(SERVICE))
    start_worker(service_config(SERVICE))
    with httpx.Client(base_url=served.url, timeout=30) as client:
        # curl http://HOST/api/predict/SERVICE?taskType=query -H 'Authorization: TOKEN' -d 'DATA'
        put = client.post(f"/api/predict/{SERVICE}", params={"taskType": "query"}, headers=AUTH, content=b"DATA")
        assert put.status_code == 200 and put.text == "1"
        request_id = put.headers["X-Eas-Queueservice-Request-Id"]
        got = client.get(
            f"/api/predict/{SERVICE}/sink", params={"requestId": request_id, "_timeout_": "20s"}, headers=AUTH
        )
    assert got.status_code == 200 and got.headers["content-type"] == "application/vnd.google.protobuf"
    [frame] = decode_frame_list(got.content)
    assert frame.data == b"echo:DATA"
    assert dict(frame.tags) == {"requestId": request_id, "taskType": "query", "type": "result"}


BAD_REQUESTS = [
    # (case, method, path, params, status, the text names)
    ("unknown-task-type", "POST", "web", {"taskType": "train"}, 400, "expected one of command, query"),
    ("missing-task-type", "POST", "web", {}, 400, "taskType is required: expected one of command, query"),
    ("bad-priority", "POST", "web", {"taskType": "query", "_priority_": "high"}, 400, "_priority_"),
    ("bad-request-id", "POST", "web", {"taskType": "query", "requestId": "a b"}, 400, "requestId"),
    ("repeated-param", "POST", "web", [("taskType", "query"), ("taskType", "command")], 400, "taskType: given more"),
    ("index-not-a-number", "GET", "web/sink", {"_index_": "abc"}, 400, "_index_: expected an integer"),
    ("negative-index", "GET", "web/sink", {"_index_": "-1"}, 400, "_index_"),
    ("length-zero", "GET", "web/sink", {"_length_": "0"}, 400, "_length_: expected an integer between 1 and 1000"),
    ("length-too-big", "GET", "web/sink", {"_length_": "100000"}, 400, "_length_"),
    ("bad-timeout", "GET", "web/sink", {"_timeout_": "5x"}, 400, '_timeout_: expected a duration such as "5s"'),
    ("timeout-too-long", "GET", "web/sink", {"_timeout_": "2h"}, 400, "_timeout_: expected a duration between"),
    ("bad-bool", "GET", "web/sink", {"_auto_delete_": "maybe"}, 400, "_auto_delete_: expected true or false"),
    ("bad-raw", "GET", "web", {"_raw_": "yes"}, 400, "_raw_"),
    ("search-without-index", "GET", "web", {"_search_": "true"}, 400, "_index_: required with _search_=true"),
    ("search-unknown-index", "GET", "web", {"_search_": "true", "_index_": "99"}, 404, "no item with index 99"),
    ("sink-search-unknown", "GET", "web/sink", {"_search_": "true", "_index_": "7"}, 404, "no item with index 7"),
    ("watch-over-http", "GET", "web/sink", {"_watch_": "true"}, 400, "_watch_: a watch needs a websocket"),
    ("commit-without-indexes", "PUT", "web/sink", {}, 400, "_indexes_: required"),
    ("commit-empty-item", "PUT", "web/sink", {"_indexes_": "1,,2"}, 400, "_indexes_: expected a comma-separated"),
    ("commit-not-a-number", "PUT", "web/sink", {"_indexes_": "1,x"}, 400, "_indexes_: expected an integer"),
    ("delete-without-indexes", "DELETE", "web", {}, 400, "_indexes_: required"),
    ("truncate-without-index", "DELETE", "web/sink", {"_trunc_": "true"}, 400, "_index_: required with _trunc_"),
    ("truncate-index-zero", "DELETE", "web/sink", {"_trunc_": "true", "_index_": "0"}, 400, "_index_"),
    # a queue not served answers as a wrong token would: no one learns which queue names exist
    ("unknown-queue", "GET", "nope", {}, 401, "wrong token in the Authorization header for queue nope, or no such"),
    ("unknown-sub-queue", "GET", "web/logs", {}, 401, "for queue web/logs, or no such queue here"),
    ("wrong-method", "PATCH", "web", {}, 405, ""),
]


@pytest.mark.parametrize(("method", "queue", "params", "status", "names"), [c[1:] for c in BAD_REQUESTS],
                         ids=[c[0] for c in BAD_REQUESTS])  # fmt: skip
def test_a_bad_request_is_a_4xx_that_says_what_was_wrong(http, method, queue, params, status, names):
    answer = http.request(method, f"/api/predict/{queue}", params=params, content=b"{}")
    assert (answer.status_code, names in answer.text) == (status, True), answer.text
    assert http.get(f"/api/predict/{SERVICE}/sink").status_code == 200  # still serving


def test_a_body_over_the_limit_is_refused_with_413_declared_or_streamed(http):
    params = {"taskType": "query"}
    declared = http.post(f"/api/predict/{SERVICE}", params=params, content=b"x" * (BODY_LIMIT + 1))
    streamed = http.post(f"/api/predict/{SERVICE}", params=params, content=iter([b"x" * 600, b"x" * 600]))
    at_limit = http.post(f"/api/predict/{SERVICE}", params=params, content=b"x" * BODY_LIMIT)
    assert (declared.status_code, streamed.status_code, at_limit.status_code) == (413, 413, 200)
    assert "over this front end's limit of 1000 bytes" in declared.text


def test_a_missing_or_wrong_token_or_another_front_ends_token_is_refused_with_401(http):
    path = f"/api/predict/{SERVICE}/sink"
    missing = http.get(path, headers={"Authorization": ""})
    wrong = http.get(path, headers={"Authorization": "guess"})
    other = http.get(path, headers={"Authorization": http.other_token})
    own = http.get("/api/predict/other/sink", headers={"Authorization": http.other_token})
    assert [r.status_code for r in (missing, wrong, other, own)] == [401, 401, 401, 200]
    assert "missing Authorization header" in missing.text and "wrong token" in wrong.text
    assert TOKEN not in wrong.text and "guess" not in wrong.text


def test_the_token_may_come_after_the_bearer_scheme_as_curl_users_write_it(http):
    token = http.headers["Authorization"]
    path = f"/api/predict/{SERVICE}/sink"
    bearer = http.get(path, headers={"Authorization": f"Bearer {token}"})
    other = http.get(path, headers={"Authorization": f"Bearer {http.other_token}"})
    assert (bearer.status_code, other.status_code) == (200, 401)


def test_an_unknown_path_is_a_404_naming_the_expected_form(http):
    answer = http.get("/elsewhere")
    assert answer.status_code == 404 and "expected /api/predict/<queue>" in answer.text


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("web/sink?_watch_=true", {"Authorization": "guess"}, 401),
        ("nope/sink?_watch_=true", AUTH, 401),
        ("web/sink", AUTH, 400),
        ("web/sink?_watch_=true&_window_=0", AUTH, 400),
        ("web/sink?_watch_=true&type=result&type=log", AUTH, 400),
        ("elsewhere", AUTH, 401),
    ],
    ids=["wrong-token", "unknown-queue", "no-watch-flag", "window-zero", "tag-filter-twice", "unknown-name"],
)
def test_a_bad_watch_is_refused_at_the_handshake_with_a_4xx(serve, path, headers, status):
    served = serve(service_config(SERVICE))
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://{served.endpoint}/api/predict/{path}", additional_headers=headers, open_timeout=10)
    assert refused.value.response.status_code == status


def test_puts_and_gets_by_tag_by_length_and_waiting_for_an_item(http):
    sink = f"/api/predict/{SERVICE}/sink"
    first = http.post(sink, params={"requestId": "req-1", "kind": "a"}, content=b"one")
    http.post(sink, params={"kind": "b"}, content=b"two")
    assert first.text == "1" and first.headers["X-Eas-Queueservice-Request-Id"] == "req-1"

    by_tag = decode_frame_list(http.get(sink, params={"kind": "b"}).content)
    by_length = decode_frame_list(http.get(sink, params={"_length_": "5"}).content)
    raw = http.get(sink, params={"requestId": "req-1", "_raw_": "true"})
    assert [f.data for f in by_tag] == [b"two"] and [f.data for f in by_length] == [b"one", b"two"]
    assert (raw.content, raw.headers["X-Eas-Queueservice-Index"]) == (b"one", "1")

    waited: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: waited.append(http.get(sink, params={"_index_": "3", "_timeout_": "20s"})))
    waiter.start()
    http.post(sink, content=b"three")
    waiter.join()
    assert [f.data for f in decode_frame_list(waited[0].content)] == [b"three"]
    assert http.get(sink, params={"_index_": "4"}).content == b""  # nothing there: an empty list, at once


def test_deleting_a_queued_request_withdraws_it_and_its_worker_never_runs_it(serve, start_worker, client_for):
    # given two queued requests and no worker
    served = serve(service_config(SERVICE))
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=30) as http:
        puts = [http.post(f"/api/predict/{SERVICE}", params={"taskType": "query"}, content=b"{}") for _ in range(2)]
        dropped, kept = (put.headers["X-Eas-Queueservice-Request-Id"] for put in puts)

        # when the first is deleted from the input queue
        assert http.delete(f"/api/predict/{SERVICE}", params={"_indexes_": puts[0].text}).text == "OK"
        attrs = http.get(f"/api/predict/{SERVICE}", params={"_attrs_": "true"}).json()
        search = http.get(f"/api/predict/{SERVICE}", params={"_search_": "true", "_index_": puts[0].text}).json()

    # then it left the queue, and once a worker comes only the other one runs
    assert (attrs["stream.length"], search["inQueue"], search["cancelRequested"]) == ("1", False, True)
    start_worker(service_config(SERVICE))
    client = client_for(SERVICE)
    assert client.result(kept, timeout=30).data == b"echo:{}"
    assert client.result(dropped, timeout=30).type == "error"
    assert client.state(dropped).status is RequestStatus.CANCELLED


def test_a_default_task_type_lets_clients_that_send_no_tags_enqueue(serve, redis_client):
    config = service_config(SERVICE) | {"scalable_job": {"default_task_type": "command"}}
    served = serve(config)
    put = httpx.post(f"{served.url}/api/predict/{SERVICE}", headers=AUTH, content=b"true")
    assert put.status_code == 200
    assert redis_client.llen(f"{SERVICE}.command\x06\x161") == 1  # a normal-priority command message


def test_an_integrated_service_serves_its_own_front_end(serve):
    config = service_config(SERVICE, type="ScalableJobService")
    served = serve(config)
    answer = httpx.get(f"{served.url}/api/predict/{SERVICE}/sink", params={"_attrs_": "true"}, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["meta.frontend"] == SERVICE
