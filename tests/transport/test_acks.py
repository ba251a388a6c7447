"""Which message a task's finish acknowledges, and that the channel's ack of it then has nothing left to do."""

from __future__ import annotations

import fakeredis

from scalablejob.store.state import UnackedMessage
from scalablejob.transport.acks import FinishAcks
from scalablejob.workers.presence import PresenceReporter


def test_a_finish_acknowledges_only_the_message_its_task_was_received_from() -> None:
    worker = PresenceReporter(fakeredis.FakeRedis(), "svc", heartbeat_s=3600)
    acks = FinishAcks(worker.delivery_tag_of)
    worker.received("r1", "tag-1")
    assert acks.message_of("r1") == UnackedMessage("tag-1", "unacked", "unacked_index")
    worker.finished("r1")
    assert acks.message_of("r1") is None and acks.message_of("never") is None


def test_the_finish_acknowledges_on_the_channels_keys() -> None:
    acks = FinishAcks({"r1": "tag-1"}.get)
    acks.keys = ("svc.unacked", "svc.unacked_index")

    assert acks.message_of("r1") == UnackedMessage("tag-1", "svc.unacked", "svc.unacked_index")


def test_each_acknowledgement_by_a_finish_is_taken_once() -> None:
    acks = FinishAcks({}.get)
    acks.acknowledged(UnackedMessage("tag-1"))

    assert not acks.take("tag-2")
    assert acks.take("tag-1")
    assert not acks.take("tag-1")
