"""The worker presence read model, as every component reads it: freshness, unreadable fields, one worker, forgetting."""

from __future__ import annotations

import fakeredis
import pytest

from scalablejob.model import keys
from scalablejob.store.presence import (
    Presence,
    PresenceReader,
    WorkerState,
    forget_presence,
    presence_of,
    read_presence,
)


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_presence_is_fresh_only_while_the_heartbeat_runs() -> None:
    presence = Presence("w", 1, "h", WorkerState.IDLE, heartbeat=100.0)
    assert presence.is_fresh(109.9) and not presence.is_fresh(110.0)


def test_an_unreadable_field_is_skipped_and_a_dead_worker_forgotten(client: fakeredis.FakeRedis) -> None:
    good = Presence("good@h", 7, "h", WorkerState.BUSY, "", {"t": "g"}, 5.0)
    client.hset(keys.worker_presence("svc"), mapping={"good@h": good.encode(), "bad@h": "{not json"})
    assert read_presence(client, "svc") == {"good@h": good}
    forget_presence(client, "svc", "good@h")
    assert client.hkeys(keys.worker_presence("svc")) == [b"bad@h"]


def test_one_workers_presence_is_read_alone_and_an_unreadable_one_is_none(client: fakeredis.FakeRedis) -> None:
    good = Presence("good@h", 7, "h", WorkerState.IDLE, "GPU-fake-0000", {}, 5.0)
    client.hset(keys.worker_presence("svc"), mapping={"good@h": good.encode(), "bad@h": "{not json"})
    assert presence_of(client, "svc", "good@h") == good
    assert presence_of(client, "svc", "bad@h") is None
    assert presence_of(client, "svc", "gone@h") is None


def test_a_reader_decodes_only_the_fields_that_changed_since_its_last_read(client: fakeredis.FakeRedis) -> None:
    key = keys.worker_presence("svc")
    kept, changed = Presence("kept@h", 1, "h", WorkerState.IDLE, seq=1), Presence("changed@h", 2, "h", WorkerState.IDLE)
    client.hset(key, mapping={"kept@h": kept.encode(), "changed@h": changed.encode(), "bad@h": "{not json"})
    reader = PresenceReader(client, "svc")
    first = reader.read()

    busy = Presence("changed@h", 2, "h", WorkerState.BUSY, "", {"t": "g"}, seq=2)
    client.hset(key, "changed@h", busy.encode())
    new = Presence("new@h", 3, "h", WorkerState.STARTING)
    client.hset(key, "new@h", new.encode())
    second = reader.read()

    assert first == {"kept@h": kept, "changed@h": changed}
    assert second == read_presence(client, "svc") == {"kept@h": kept, "changed@h": busy, "new@h": new}
    assert second["kept@h"] is first["kept@h"]  # the same field: not decoded again
    assert second["changed@h"] is not first["changed@h"]
