"""A worker's activity flusher (workers/activity.py): what it counted reaches the service's counters once, the last
batch at its stop, and a write the broker refused is kept for the next (fakeredis: pure Redis logic)."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from scalablejob.model import keys
from scalablejob.model.history import ActivityTally, Counts
from scalablejob.store.history import HistoryStore, write_activity
from scalablejob.workers.activity import ActivityFlusher

SERVICE = "svc"


class RefusingRedis(fakeredis.FakeRedis):
    """A broker that refuses writes while `away`."""

    away = False

    def pipeline(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.away:
            raise redis.ConnectionError("the broker is away")
        return super().pipeline(*args, **kwargs)


@pytest.fixture
def client() -> RefusingRedis:
    return RefusingRedis()


def counted(tally: ActivityTally, started: int, finished: int) -> None:
    for _ in range(started):
        tally.started(0.5)
    for _ in range(finished):
        tally.finished(1.5, failed=False)


def test_what_was_counted_since_the_last_flush_is_written_when_the_flusher_stops(client):
    tally = ActivityTally()
    flusher = ActivityFlusher(client, SERVICE, tally, flush_s=3600).start()  # no beat comes before the stop
    counted(tally, started=2, finished=1)
    flusher.stop()
    activity = HistoryStore(client, SERVICE).drain_activity()
    assert (activity.counts, activity.waits, activity.runs) == (Counts(2, 1, 0), [0.5, 0.5], [1.5])


def test_a_batch_the_broker_refused_is_written_with_the_next_one_and_nothing_twice(client):
    tally = ActivityTally()
    flusher = ActivityFlusher(client, SERVICE, tally)  # flushed by hand: no thread
    counted(tally, started=1, finished=1)
    client.away = True
    flusher.flush()
    assert not client.exists(keys.activity_counts(SERVICE))

    client.away = False
    counted(tally, started=1, finished=0)
    flusher.flush()
    flusher.flush()  # nothing left to write
    activity = HistoryStore(client, SERVICE).drain_activity()
    assert (activity.counts, sorted(activity.waits), activity.runs) == (Counts(2, 1, 0), [0.5, 0.5], [1.5])


def test_a_flush_keeps_the_timings_list_to_its_cap_the_newest_first(client):
    client.rpush(keys.activity_timings(SERVICE), *[b"w9.000"] * 3)
    tally = ActivityTally()
    counted(tally, started=0, finished=2)
    write_activity(client, SERVICE, tally.take(), timings_cap=4)
    assert client.lrange(keys.activity_timings(SERVICE), 0, -1) == [b"r1.500", b"r1.500", b"w9.000", b"w9.000"]
