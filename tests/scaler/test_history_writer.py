"""The leading scaler's history: one sample per second at most, with its decisions as events, each host's workers,
and the activity since the last sample (fakeredis, a FakeLauncher; time is a number)."""

from __future__ import annotations

import dataclasses
import json

import fakeredis
from test_hosts_split import host_scaler
from test_loop import SERVICE, T0, all_ready, enqueue, make_scaler

from scalablejob.model import keys
from scalablejob.model.history import Counts, HostWorkers, Percentiles
from scalablejob.scaler.history import HistoryWriter
from scalablejob.scaler.loop import Scaler
from scalablejob.scaler.testing import FAKE_HOST
from scalablejob.store.history import HistoryStore
from scalablejob.store.sink import Sink
from scalablejob.store.state import RequestStatus, RequestStore


def with_history(client: fakeredis.FakeRedis, scaler: Scaler) -> Scaler:
    scaler.parts = dataclasses.replace(scaler.parts, history=HistoryWriter(HistoryStore(client, SERVICE), SERVICE))
    return scaler


def test_the_scaler_writes_one_sample_a_second_with_the_depth_the_workers_and_each_decision_as_an_event():
    # given a scaler with a history and 6 queued commands
    client = fakeredis.FakeRedis()
    scaler = with_history(client, make_scaler(client))
    scaler.start(T0)
    enqueue(client, 6)

    # when it passes at T0, T0 + 0.25 (its workers now ready) and T0 + 1.0
    scaler.tick(T0)
    all_ready(client, scaler)
    scaler.tick(T0 + 0.25)
    scaler.tick(T0 + 1.0)

    # then two samples were written, one second apart
    samples = HistoryStore(client, SERVICE).samples()
    assert [sample.dt for sample in samples] == [0.0, 1.0]
    first, second = samples
    assert first.depth == {"command": 6, "query": 0}
    assert first.hosts == {FAKE_HOST: HostWorkers(desired=3, running=0, busy=0)}
    assert [(event.change, event.desired) for event in first.events] == [("up", 3)]
    shown = json.loads(client.lindex(keys.scaler_decisions(SERVICE), -1))  # the oldest decision `status` shows
    assert first.events[0].reason == shown["reason"]
    # and the second sample has the workers running; the pass at T0 + 0.25 changed the replicas: its event is kept
    assert second.hosts == {FAKE_HOST: HostWorkers(desired=3, running=3, busy=0)}
    assert [event.change for event in second.events] == ["hold"]


def test_a_sample_counts_the_tasks_started_and_finished_since_the_one_before_with_their_percentiles():
    # given a scaler that wrote its first sample (its baseline) after one task had already finished
    client = fakeredis.FakeRedis()
    requests = RequestStore(client, SERVICE)
    requests.create("old", "command", now=T0 - 10)
    requests.mark_running("old", "w", now=T0 - 9)
    scaler = with_history(client, make_scaler(client))
    scaler.start(T0)
    scaler.tick(T0)

    # when two tasks start (waits 1 and 3 s) and one of them fails after 2 s before the next sample
    for request_id, wait in (("a", 1.0), ("b", 3.0)):
        requests.create(request_id, "command", now=T0)
        requests.mark_running(request_id, "w", now=T0 + wait)
    requests.finish(Sink(client, SERVICE), "a", RequestStatus.FAILED, b"", {}, now=T0 + 3.0, error="boom")
    scaler.tick(T0 + 1.5)

    # then the second sample says so; the first one counted nothing (what came before it is not its second)
    first, second = HistoryStore(client, SERVICE).samples()
    assert (first.started, first.finished, first.wait) == (0, 0, None)
    assert (second.started, second.finished, second.failed) == (2, 1, 1)
    assert second.wait == Percentiles(1.0, 3.0, 2)
    assert second.run == Percentiles(2.0, 2.0, 1)
    assert HistoryStore(client, SERVICE).drain_activity().counts == Counts(3, 1, 1)


def test_only_the_leader_writes_and_its_samples_show_every_hosts_workers():
    # given two hosts' scalers sharing one Redis, both with a history
    client = fakeredis.FakeRedis()
    first = with_history(client, host_scaler(client, "h1", 2))
    second = with_history(client, host_scaler(client, "h2", 4))
    first.start(T0)
    second.start(T0)
    enqueue(client, 12)

    # when both pass three times, a second apart
    for now in (T0 + 1, T0 + 2, T0 + 3):
        first.tick(now)
        second.tick(now)

    # then the leader alone wrote, one sample per pass, and the last one has both hosts' shares, running
    samples = HistoryStore(client, SERVICE).samples()
    assert len(samples) == 3
    assert samples[-1].hosts == {"h1": HostWorkers(2, 2, 0), "h2": HostWorkers(4, 4, 0)}
    assert samples[0].events[0].desired == 6
