"""Queue depth counts every priority list, named exactly as kombu's Redis transport names them."""

from __future__ import annotations

import fakeredis
import pytest
from kombu import Connection

from scalablejob.api.celery_app import make_app
from scalablejob.store.queues import (
    NORMAL_PRIORITY,
    PRIORITY_STEPS,
    URGENT_PRIORITY,
    message_task_id,
    priority_lists,
    queue_depth,
)


@pytest.mark.integration
def test_priority_lists_match_kombus_names(redis_url):
    app = make_app("svc", redis_url)
    with Connection(app.conf.broker_url, transport_options=app.conf.broker_transport_options) as connection:
        channel = connection.default_channel
        assert list(channel.priority_steps) == list(PRIORITY_STEPS)
        assert priority_lists("svc.query") == [channel._q_for_pri("svc.query", step) for step in PRIORITY_STEPS]  # noqa: SLF001 - kombu's own name of the list, to compare


def test_urgent_lists_come_first():
    assert priority_lists("q")[0] == "q" and URGENT_PRIORITY < NORMAL_PRIORITY


def test_queue_depth_sums_all_priorities():
    client = fakeredis.FakeRedis()
    urgent, normal = priority_lists("svc.command")
    client.lpush(urgent, "a")
    client.lpush(normal, "b", "c")
    client.lpush("svc.query", "other queue")

    assert queue_depth(client, "svc.command") == 3
    assert queue_depth(client, "svc.empty") == 0


def test_message_task_id_reads_a_celery_message_and_nothing_else():
    assert message_task_id(b'{"headers": {"id": "abc"}, "body": "e30="}') == "abc"
    for raw in (b"not json", b"{}", b'{"headers": null}', b"[1, 2]"):
        assert message_task_id(raw) is None
