"""A put's own Celery message is the one `app.send_task` would send, on the list kombu would push it to, with the
protocol version in a header of its own."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from kombu import Connection

from scalablejob.api.celery_app import make_app
from scalablejob.model.protocol import MESSAGE_HEADER, PROTOCOL_VERSION
from scalablejob.store.queues import NORMAL_PRIORITY, URGENT_PRIORITY, priority_list, priority_lists
from scalablejob.transport.message import task_message

ARGS = (b'{"x": 1}', {"taskType": "query", "requestId": "r1"})
KWARGS = {"frontend": "svc"}
PER_MESSAGE = ("delivery_tag",)  # kombu draws a new one for each message


def decoded(raw: bytes | str) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(raw)
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    for name in PER_MESSAGE:
        envelope["properties"].pop(name)
    envelope["headers"].pop("ignore_result")  # send_task leaves it None, which a worker reads as False
    return envelope


@pytest.mark.integration
@pytest.mark.parametrize("priority", [URGENT_PRIORITY, NORMAL_PRIORITY])
def test_the_message_is_what_send_task_sends(redis_url: str, redis_client: redis.Redis, priority: int) -> None:
    app = make_app("svc", redis_url)
    try:
        app.send_task("scalablejob.query", args=ARGS, kwargs=KWARGS, task_id="r1", queue="svc.query",
                      priority=priority)  # fmt: skip
        [sent_to] = [key for key in priority_lists("svc.query") if redis_client.llen(key)]
        sent = redis_client.lpop(sent_to)
        ours = task_message(app, "scalablejob.query", "r1", ARGS, KWARGS, "svc.query", priority)
    finally:
        app.close()
    assert ours.list_key == sent_to
    ours_decoded = decoded(ours.payload)
    assert ours_decoded["headers"].pop(MESSAGE_HEADER) == PROTOCOL_VERSION
    assert ours_decoded == decoded(sent)


@pytest.mark.integration
def test_priorities_map_to_the_lists_kombu_pushes_to(redis_url: str) -> None:
    app = make_app("svc", redis_url)
    with Connection(app.conf.broker_url, transport_options=app.conf.broker_transport_options) as connection:
        channel = connection.default_channel
        for priority in range(10):
            assert priority_list("svc.query", priority) == channel._q_for_pri("svc.query", priority)  # noqa: SLF001 - kombu's own name of the list, to compare
