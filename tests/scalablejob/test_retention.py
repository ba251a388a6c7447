"""Retention against a real redis-server: the output queue is trimmed to its maximum age by its writers, its clock
stays small, and a finished request's state and input index expire on the same clock, readable until then."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
from redis import asyncio as aioredis

from conftest import wait_until
from scalablejob.model import keys
from scalablejob.model.config import QueueConfig
from scalablejob.store.limits import Limit, record_limits
from scalablejob.store.sink import CHECKPOINTS_PER_MAX_AGE, EntryType, Sink, entry_tags
from scalablejob.store.state import FINISHED_STATE_TTL_S, FrontEndRequests, RequestState, RequestStatus, RequestStore

pytestmark = pytest.mark.timeout(60)

SERVICE = "svc"
T0 = 1_700_000_000.0
MAX_AGE_S = 60
STEP_S = MAX_AGE_S / CHECKPOINTS_PER_MAX_AGE  # how often the clock takes a checkpoint


@pytest.fixture
def limited(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """A Redis whose service svc keeps its output queues for MAX_AGE_S."""
    record_limits(redis_client, SERVICE, QueueConfig(sink_max_age_s=MAX_AGE_S))
    yield redis_client


def kept(sink: Sink, count: int = 10_000) -> list[int]:
    """The indexes of the first `count` entries the output queue still holds."""
    return [entry.index for entry in sink.read(count=count)]


def finish(store: RequestStore, sink: Sink, request_id: str, now: float) -> int:
    tags = entry_tags(request_id, "query", EntryType.RESULT)
    return store.finish(sink, request_id, RequestStatus.DONE, b"result", tags, now=now)


def at_index(redis_url: str, index: int) -> RequestState | None:
    """What the service's own front end (on redis.asyncio) finds at this input index."""

    async def ask() -> RequestState | None:
        async with aioredis.Redis.from_url(redis_url) as client:
            return await FrontEndRequests(client, SERVICE, SERVICE).at_index(index)

    return asyncio.run(ask())


def test_the_limits_hash_records_the_maximum_age(limited: redis.Redis) -> None:
    recorded = limited.hget(keys.queue_limits(SERVICE), Limit.SINK_MAX_AGE_S.value)
    assert recorded == str(MAX_AGE_S).encode()


def test_an_entry_older_than_the_maximum_age_is_trimmed_on_the_next_append(limited: redis.Redis) -> None:
    sink = Sink(limited, SERVICE)
    first, second = sink.append(b"old", {}, now=T0), sink.append(b"newer", {}, now=T0 + 10)
    assert kept(sink) == [first, second]  # neither is MAX_AGE_S old yet

    third = sink.append(b"now", {}, now=T0 + MAX_AGE_S + 1)

    assert kept(sink) == [second, third]


def test_the_final_entry_of_a_request_trims_the_queue_the_same_way(limited: redis.Redis) -> None:
    sink, store = Sink(limited, SERVICE), RequestStore(limited, SERVICE)
    old = sink.append(b"old", {}, now=T0)
    store.create("r1", "query", now=T0 + MAX_AGE_S)

    result = finish(store, sink, "r1", now=T0 + MAX_AGE_S + 1)

    assert old not in kept(sink) and kept(sink) == [result]


def lengths_limited(client: redis.Redis, max_length: int) -> tuple[Sink, RequestStore]:
    record_limits(client, SERVICE, QueueConfig(sink_max_length=max_length, sink_max_age_s=MAX_AGE_S))
    return Sink(client, SERVICE), RequestStore(client, SERVICE)


def log_line(sink: Sink, text: str) -> int:
    return sink.append(text.encode(), entry_tags("flood", "command", EntryType.LOG), now=T0)


def test_past_its_maximum_length_the_queue_evicts_the_oldest_log_lines_and_keeps_every_unread_result(
    redis_client: redis.Redis,
) -> None:
    # given unread results among log lines
    sink, store = lengths_limited(redis_client, 10)
    early_logs = [log_line(sink, f"early {n}") for n in range(3)]
    results = []
    for n in range(5):
        store.create(f"r{n}", "query", now=T0)
        results.append(finish(store, sink, f"r{n}", now=T0))

    # when one job floods the queue with lines
    flood = [log_line(sink, f"line {n}") for n in range(500)]

    # then the queue is at its length exactly, every result is still there, and the newest lines fill the rest
    assert sink.length() == 10
    assert kept(sink) == [*results, *flood[-5:]]
    assert not set(early_logs) & set(kept(sink))


def test_a_queue_of_unread_results_alone_keeps_them_all_and_takes_no_more_log_lines(redis_client: redis.Redis) -> None:
    sink, store = lengths_limited(redis_client, 3)
    results = []
    for n in range(5):
        store.create(f"r{n}", "query", now=T0)
        results.append(finish(store, sink, f"r{n}", now=T0))

    log_line(sink, "a line nobody has room for")

    assert kept(sink) == results


def test_an_entry_a_client_tagged_as_a_result_is_not_kept_past_the_length_as_a_final_entry_is(
    redis_client: redis.Redis,
) -> None:
    sink, _ = lengths_limited(redis_client, 3)
    posted = [sink.append(b"mine", entry_tags(f"p{n}", "query", EntryType.RESULT), now=T0) for n in range(5)]

    assert kept(sink) == posted[-3:]


def test_eviction_reaches_a_lowered_length_over_a_few_appends_without_long_calls(redis_client: redis.Redis) -> None:
    sink, _ = lengths_limited(redis_client, 5000)
    for n in range(5000):
        log_line(sink, str(n))
    record_limits(redis_client, SERVICE, QueueConfig(sink_max_length=10, sink_max_age_s=MAX_AGE_S))

    log_line(sink, "first after")
    assert 10 < sink.length() <= 5001 - 1000  # one append evicts at most 1000 entries
    for n in range(5):
        log_line(sink, f"after {n}")
    assert sink.length() == 10


def test_a_front_ends_queue_keeps_its_own_clock(limited: redis.Redis) -> None:
    own, web = Sink(limited, SERVICE), Sink(limited, SERVICE, frontend="web")
    own.append(b"own", {}, now=T0)

    web.append(b"web", {}, now=T0 + MAX_AGE_S + 1)

    assert (len(kept(own)), len(kept(web))) == (1, 1)
    assert own.clock != web.clock == keys.frontend_sink_clock(SERVICE, "web")


@pytest.mark.parametrize(
    "gap_s", [0.05, STEP_S * 0.7, STEP_S * 3, MAX_AGE_S / 7], ids=["busy", "under-a-step", "over-a-step", "sparse"]
)
def test_appends_over_many_maximum_ages_keep_every_young_entry_and_no_old_one(limited: redis.Redis, gap_s: float):
    sink = Sink(limited, SERVICE)
    appended_at: dict[int, float] = {}
    now = T0
    while now < T0 + 3 * MAX_AGE_S:
        last = sink.append(b"x", {}, now=now)
        appended_at[last] = now
        first = kept(sink, count=1)[0]
        assert sink.length() == last - first + 1  # trimmed from the front only
        # nothing younger than the maximum age is gone, nothing older than it by two steps (and gaps) is left
        assert appended_at.get(first - 1, T0 - MAX_AGE_S) <= now - MAX_AGE_S
        assert appended_at[first] > now - MAX_AGE_S - 2 * (STEP_S + gap_s)
        now += gap_s
    assert limited.zcard(sink.clock) <= CHECKPOINTS_PER_MAX_AGE + 2


def test_without_recorded_limits_the_default_age_applies(redis_client: redis.Redis) -> None:
    sink = Sink(redis_client, SERVICE)
    first = sink.append(b"old", {}, now=T0)

    sink.append(b"six days later", {}, now=T0 + FINISHED_STATE_TTL_S - 24 * 3600)
    assert first in kept(sink)

    sink.append(b"eight days later", {}, now=T0 + FINISHED_STATE_TTL_S + 24 * 3600)
    assert first not in kept(sink)


def test_a_live_requests_index_never_expires(limited: redis.Redis, redis_url: str) -> None:
    index = RequestStore(limited, SERVICE).create("r1", "query", now=T0)

    assert limited.ttl(keys.input_index_entry(SERVICE, index)) == -1
    state = at_index(redis_url, index)
    assert state is not None and (state.request_id, state.status) == ("r1", RequestStatus.QUEUED)


def test_a_finished_requests_state_and_index_expire_after_the_maximum_age(limited: redis.Redis, redis_url: str):
    store, sink = RequestStore(limited, SERVICE), Sink(limited, SERVICE)
    index = store.create("r1", "query", now=time.time())

    finish(store, sink, "r1", now=time.time())

    for key in (keys.input_index_entry(SERVICE, index), keys.request_state(SERVICE, "r1")):
        assert MAX_AGE_S - 5 < limited.ttl(key) <= MAX_AGE_S
    state = at_index(redis_url, index)  # still found by its index until then
    assert state is not None and (state.request_id, state.status) == ("r1", RequestStatus.DONE)


def test_a_finished_request_is_no_longer_found_by_index_once_expired(redis_client: redis.Redis, redis_url: str):
    record_limits(redis_client, SERVICE, QueueConfig(sink_max_age_s=1))
    store, sink = RequestStore(redis_client, SERVICE), Sink(redis_client, SERVICE)
    index = store.create("r1", "query", now=time.time())
    finish(store, sink, "r1", now=time.time())
    assert at_index(redis_url, index) is not None

    wait_until(lambda: at_index(redis_url, index) is None, 10, "the finished request's index to expire")
    assert redis_client.exists(keys.input_index_entry(SERVICE, index), keys.request_state(SERVICE, "r1")) == 0


def test_a_discarded_request_takes_its_index_key_with_it(limited: redis.Redis, redis_url: str) -> None:
    store = RequestStore(limited, SERVICE)
    index = store.create("r1", "query", now=T0)

    store.discard("r1", index)

    assert limited.exists(keys.input_index_entry(SERVICE, index)) == 0
    assert at_index(redis_url, index) is None
