"""Paged reads of the backlog: page sizes by a table, ids found across pages while the lists change underneath."""

from __future__ import annotations

import itertools
import json

import fakeredis
import pytest

from scalablejob.api.celery_app import make_app
from scalablejob.scaler import paging
from scalablejob.scaler.paging import LEAST_PAGE, MOST_PAGE, TARGET_S, next_page
from scalablejob.store.queues import message_task_id
from scalablejob.store.state import RequestStore
from scalablejob.transport.message import task_message

SERVICE = "svc"
QUEUE = "svc.command"


@pytest.mark.parametrize(
    ("size", "took_s", "expected"),
    [
        (100, TARGET_S * 2, 50),  # slow: halve
        (100, TARGET_S / 4, 200),  # quick: double
        (100, TARGET_S * 0.75, 100),  # in between: keep
        (LEAST_PAGE, 1.0, LEAST_PAGE),  # never below one message
        (MOST_PAGE, 0.0, MOST_PAGE),  # never above the most
    ],
)
def test_the_next_page_halves_after_a_slow_call_and_doubles_after_a_quick_one(size, took_s, expected):
    assert next_page(size, took_s) == expected


def message(task_id: str) -> bytes:
    return json.dumps({"body": "e30=", "headers": {"lang": "py", "id": task_id}, "properties": {}}).encode()


def slow_clock(step_s: float):
    """A clock that says every call took `step_s`."""
    ticks = itertools.count()
    return lambda: next(ticks) * step_s


def test_every_queued_id_is_found_across_pages_of_any_size():
    client = fakeredis.FakeRedis()
    client.lpush(QUEUE, *[message(f"r{n}") for n in range(300)])

    quick = paging.queued_ids(client, [QUEUE, "svc.empty"], clock=slow_clock(0.0))
    slow = paging.queued_ids(client, [QUEUE], clock=slow_clock(1.0))  # pages shrink to one message

    assert quick == slow == {f"r{n}" for n in range(300)}


def test_messages_pushed_or_popped_between_pages_make_no_message_still_there_missed():
    client = fakeredis.FakeRedis()
    client.lpush(QUEUE, *[message(f"r{n}") for n in range(1000)])
    popped: list[bytes] = []

    def busy_queue() -> float:  # between pages, puts push at the head and workers pop at the tail
        for _ in range(20):
            client.lpush(QUEUE, message(f"new{len(popped)}"))
            popped.append(client.rpop(QUEUE))
        return 0.0

    found = paging.queued_ids(client, [QUEUE], clock=busy_queue)
    popped_n = range(len(popped))

    there_throughout = {message_task_id(raw) for raw in client.lrange(QUEUE, 0, -1)} - {f"new{n}" for n in popped_n}
    assert len(popped) >= 100 and len(there_throughout) >= 800
    assert there_throughout <= found


def test_the_task_id_is_read_from_a_real_message_by_search_as_by_decoding():
    app = make_app(SERVICE, "redis://localhost:1/0")
    raw = task_message(app, "scalablejob.command", "id-1", ['echo "id": "x"'], {}, QUEUE, 1).payload.encode()

    assert message_task_id(raw) == json.loads(raw)["headers"]["id"] == "id-1"
    assert message_task_id(b'{"headers": {"id": "a\\"b"}}') == 'a"b'  # an escape: decoded whole


def test_open_ids_are_read_across_pages_and_streams_with_odd_ids_decoded_whole():
    client = fakeredis.FakeRedis()
    store = RequestStore(client, SERVICE)
    ids = [f"r{n}" for n in range(250)] + ['odd"id', "caf\u00e9"]
    for n, request_id in enumerate(ids):
        store.create(request_id, "command", frontend="fe" if n % 3 else None, tags={"requestId": request_id})
    store.create("spoof", "command", tags={'x"requestId': "not-me", "requestId": "spoof"})

    assert paging.open_ids(store, clock=slow_clock(0.0)) == {*ids, "spoof"}
    assert paging.open_ids(store, clock=slow_clock(1.0)) == {*ids, "spoof"}
