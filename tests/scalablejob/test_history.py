"""The dashboard's history: the pure encoding of samples, percentiles and counters, and what the request state
scripts record for it (fakeredis: pure Redis logic)."""

from __future__ import annotations

import fakeredis
import pytest

from scalablejob.model import keys
from scalablejob.model.history import (
    FAILURES_CAP,
    MAX_SAMPLES,
    TIMINGS_CAP,
    ActivityTally,
    Counts,
    HostWorkers,
    Percentiles,
    Sample,
    ScaleEvent,
    decode_sample,
    encode_sample,
    in_window,
    percentile,
    split_timings,
    summarize,
    task_type_of_queue,
)
from scalablejob.store.history import HistoryStore, write_activity
from scalablejob.store.sink import Sink
from scalablejob.store.state import RequestStatus, RequestStore

SERVICE = "svc"
T0 = 1_700_000_000.0


def a_sample(**changes: object) -> Sample:
    fields: dict[str, object] = {
        "dt": 1.02, "depth": {"command": 7, "query": 0},
        "hosts": {"a": HostWorkers(3, 2, 2), "b": HostWorkers(1, 1, 0)},
        "started": 4, "finished": 3, "failed": 1, "wait": Percentiles(0.5, 2.25, 4), "run": None,
        "events": (ScaleEvent("up", 4, "queued=7 running=2 -> 4 workers"),),
    }  # fmt: skip
    fields.update(changes)
    return Sample(**fields)  # type: ignore[arg-type]


def test_a_sample_decodes_to_what_was_encoded_with_its_time_from_the_stream_id():
    sample = a_sample()
    decoded = decode_sample("1700000000123-0", encode_sample(sample))
    assert decoded == a_sample(at=1_700_000_000.123, id="1700000000123-0")
    assert decoded.to_json()["hosts"] == {"a": [3, 2, 2], "b": [1, 1, 0]}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [(b"not json", "Expecting value"), (b'{"dt": 1}', "'depth'"), (b'{"dt": "x"}', "could not convert")],
)
def test_an_entry_that_is_not_a_sample_is_an_error_naming_the_entry(raw, problem):
    with pytest.raises(ValueError, match=rf"history entry 5-0: expected a sample \(JSON of version 1\): .*{problem}"):
        decode_sample("5-0", raw)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([1.0], 0.5, 1.0), ([1.0], 0.95, 1.0), ([1.0, 2.0], 0.5, 1.0), ([1.0, 2.0], 0.95, 2.0),
     ([float(n) for n in range(1, 101)], 0.5, 50.0), ([float(n) for n in range(1, 101)], 0.95, 95.0),
     ([float(n) for n in range(1, 21)], 0.95, 19.0)],
)  # fmt: skip
def test_percentile_is_the_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def test_summarize_sorts_and_rounds_and_says_none_for_nothing():
    assert summarize([3.0, 1.0, 2.0]) == Percentiles(2.0, 3.0, 3)
    assert summarize([0.12345]) == Percentiles(0.123, 0.123, 1)
    assert summarize([]) is None


def test_timings_split_into_waits_and_runs_skipping_what_does_not_parse():
    assert split_timings([b"w0.250", b"r1.500", "w2", b"x1", b"wnan?", b"", b"r"]) == ([0.25, 2.0], [1.5])


@pytest.mark.parametrize(
    ("now", "before", "expected"),
    [(Counts(5, 3, 1), Counts(2, 2, 0), Counts(3, 1, 1)), (Counts(5, 3, 1), None, Counts()),
     (Counts(1, 0, 0), Counts(5, 3, 1), Counts()), (Counts(2, 2, 0), Counts(2, 2, 0), Counts())],
)  # fmt: skip
def test_counts_since_an_earlier_reading_are_zero_without_one_or_when_they_went_back(now, before, expected):
    assert now.since(before) == expected


def test_the_window_keeps_the_last_30_minutes_by_the_given_clock():
    samples = [a_sample(at=T0 - 1801), a_sample(at=T0 - 1800), a_sample(at=T0)]
    assert [s.at for s in in_window(samples, T0)] == [T0 - 1800, T0]


def test_a_queue_name_gives_its_task_type():
    assert task_type_of_queue(SERVICE, "svc.command") == "command"
    assert task_type_of_queue(SERVICE, "other.query") == "other.query"


# ---- what the state scripts record ------------------------------------------------------------------------------


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def run_one(client: fakeredis.FakeRedis, request_id: str, *, queued: float, started: float, finished: float,
            status: RequestStatus = RequestStatus.DONE, tally: ActivityTally | None = None) -> None:  # fmt: skip
    store = RequestStore(client, SERVICE, tally)
    store.create(request_id, "command", now=queued)
    assert store.mark_running(request_id, "w1", now=started) == 1
    assert store.finish(Sink(client, SERVICE), request_id, status, b"", {}, now=finished, error="boom") > 0


def test_starts_and_finishes_are_counted_and_their_wait_and_run_times_drained_once(client):
    # given two requests that ran, one of which failed
    run_one(client, "a", queued=T0, started=T0 + 0.5, finished=T0 + 2.0)
    run_one(client, "b", queued=T0, started=T0 + 1.25, finished=T0 + 1.5, status=RequestStatus.FAILED)

    # when the scaler drains the activity, then it gets the counters and each wait and run time
    history = HistoryStore(client, SERVICE)
    first = history.drain_activity()
    assert first.counts == Counts(started=2, finished=2, failed=1)
    assert (sorted(first.waits), sorted(first.runs)) == ([0.5, 1.25], [0.25, 1.5])
    # and the failure is listed, newest first
    assert client.lrange(keys.recent_failures(SERVICE), 0, -1) == [b"b"]

    # and a second drain finds the same counters and no timing twice
    second = history.drain_activity()
    assert (second.counts, second.waits, second.runs) == (Counts(2, 2, 1), [], [])


def test_a_request_cancelled_before_it_started_counts_as_finished_with_no_run_time(client):
    store = RequestStore(client, SERVICE)
    store.create("c", "command", now=T0)
    store.finish(Sink(client, SERVICE), "c", RequestStatus.CANCELLED, b"", {}, now=T0 + 1)
    activity = HistoryStore(client, SERVICE).drain_activity()
    assert (activity.counts, activity.waits, activity.runs) == (Counts(0, 1, 0), [], [])


def test_the_timings_and_failures_lists_are_capped(client):
    # given more failed requests than either cap holds
    client.rpush(keys.activity_timings(SERVICE), *[b"w1"] * TIMINGS_CAP)
    for n in range(FAILURES_CAP + 2):
        run_one(client, f"r{n}", queued=T0, started=T0 + 1, finished=T0 + 2, status=RequestStatus.FAILED)

    # then each list keeps its cap, the newest first
    assert client.llen(keys.activity_timings(SERVICE)) == TIMINGS_CAP
    assert client.llen(keys.recent_failures(SERVICE)) == FAILURES_CAP
    assert client.lindex(keys.recent_failures(SERVICE), 0) == f"r{FAILURES_CAP + 1}".encode()
    assert client.lindex(keys.activity_timings(SERVICE), 0) == b"r1.000"


def test_a_workers_tally_takes_the_counting_off_the_scripts_and_one_write_reads_as_theirs(client):
    # given the same two requests run through a store that counts in the scripts and one with a worker's tally
    counted_here = fakeredis.FakeRedis()
    run_one(counted_here, "a", queued=T0, started=T0 + 0.5, finished=T0 + 2.0)
    run_one(counted_here, "b", queued=T0, started=T0 + 1.25, finished=T0 + 1.5, status=RequestStatus.FAILED)
    tally = ActivityTally()
    run_one(client, "a", queued=T0, started=T0 + 0.5, finished=T0 + 2.0, tally=tally)
    run_one(client, "b", queued=T0, started=T0 + 1.25, finished=T0 + 1.5, status=RequestStatus.FAILED, tally=tally)

    # then with the tally the scripts wrote no counter and no timing, only the failure's id (the table shows it now)
    assert not client.exists(keys.activity_counts(SERVICE), keys.activity_timings(SERVICE))
    assert client.lrange(keys.recent_failures(SERVICE), 0, -1) == [b"b"]

    # and once the tally is written, the scaler drains what the scripts would have recorded, and nothing twice
    write_activity(client, SERVICE, tally.take())
    assert not tally.take()
    mine, theirs = HistoryStore(client, SERVICE).drain_activity(), HistoryStore(counted_here, SERVICE).drain_activity()
    assert mine.counts == theirs.counts == Counts(started=2, finished=2, failed=1)
    assert (sorted(mine.waits), sorted(mine.runs)) == (sorted(theirs.waits), sorted(theirs.runs))


def test_a_tally_a_write_could_not_take_is_counted_again_and_its_timings_stay_capped():
    tally = ActivityTally(timings_cap=3)
    tally.started(0.25)
    tally.finished(1.0, failed=True)
    batch = tally.take()
    assert (batch.counts, batch.timings) == (Counts(1, 1, 1), ("w0.250", "r1.000"))
    # when the write failed and more came meanwhile, then the next batch holds both, the oldest timings kept
    tally.started(None)
    tally.started(2.0)
    tally.finished(3.0, failed=False)
    tally.give_back(batch)
    again = tally.take()
    assert (again.counts, again.timings) == (Counts(3, 2, 1), ("w0.250", "r1.000", "w2.000"))
    assert not tally.take()


def test_a_tally_keeps_no_more_timings_than_its_cap_but_counts_every_task():
    tally = ActivityTally(timings_cap=2)
    for seconds in (1.0, 2.0, 3.0):
        tally.started(seconds)
    batch = tally.take()
    assert (batch.counts, batch.timings) == (Counts(3, 0, 0), ("w1.000", "w2.000"))


def test_a_failure_whose_state_is_gone_counts_as_the_scripts_count_it(client):
    # given a request whose state hash went (expired, discarded) while it ran, finished as failed, each way
    tally = ActivityTally()
    counted_here = fakeredis.FakeRedis()
    for redis_client, store in ((client, RequestStore(client, SERVICE, tally)),
                                (counted_here, RequestStore(counted_here, SERVICE))):  # fmt: skip
        store.create("gone", "command", now=T0)
        store.mark_running("gone", "w1", now=T0 + 1)
        redis_client.delete(keys.request_state(SERVICE, "gone"))
        assert store.finish(Sink(redis_client, SERVICE), "gone", RequestStatus.FAILED, b"", {}, now=T0 + 2) > 0
    write_activity(client, SERVICE, tally.take())

    # then both count it finished, and neither counts a failure it could not list
    mine, theirs = HistoryStore(client, SERVICE).drain_activity(), HistoryStore(counted_here, SERVICE).drain_activity()
    assert mine.counts == theirs.counts == Counts(started=1, finished=1, failed=0)


def test_the_history_stream_keeps_30_minutes_of_samples_and_no_more(client):
    history = HistoryStore(client, SERVICE)
    for n in range(MAX_SAMPLES + 5):
        history.append(a_sample(started=n))
    samples = history.samples()
    assert len(samples) == MAX_SAMPLES
    assert (samples[0].started, samples[-1].started) == (5, MAX_SAMPLES + 4)
