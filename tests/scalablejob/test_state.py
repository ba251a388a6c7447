"""Request state in Redis: creation with unique ids and indexes, the status transitions, and expiry once finished."""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
import pytest

from scalablejob import keys
from scalablejob.errors import RequestError
from scalablejob.sink import HashUpdate, Sink, encode_tags
from scalablejob.state import FINISHED_STATE_TTL_S, RequestState, RequestStatus, RequestStore

T0 = 1_700_000_000.0


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> RequestStore:
    return RequestStore(client, "svc")


def state_of(store: RequestStore, request_id: str) -> RequestState:
    state = store.get(request_id)
    assert state is not None, f"no state for {request_id}"
    return state


def test_create_returns_increasing_indexes_from_one(store: RequestStore) -> None:
    assert [store.create(f"r{n}", "query", now=T0) for n in range(3)] == [1, 2, 3]


def test_create_records_a_queued_request(store: RequestStore) -> None:
    index = store.create("r1", "command", now=T0)

    assert store.get("r1") == RequestState(
        request_id="r1", index=index, task_type="command", status=RequestStatus.QUEUED, queued_at=T0
    )


def test_create_with_a_request_id_in_use_raises_naming_it(store: RequestStore) -> None:
    store.create("dup-1", "query", now=T0)

    with pytest.raises(RequestError, match="'dup-1'"):
        store.create("dup-1", "command", now=T0 + 1)
    # the failed create took no index and left the first request as it was
    assert store.create("r2", "query", now=T0) == 2
    assert state_of(store, "dup-1").task_type == "query"


def test_each_service_has_its_own_indexes(client: fakeredis.FakeRedis, store: RequestStore) -> None:
    other = RequestStore(client, "other")
    store.create("r1", "query", now=T0)

    assert other.create("r1", "query", now=T0) == 1
    assert other.get("r1") is not None


def test_discard_forgets_the_request_and_its_index(store: RequestStore) -> None:
    index = store.create("r1", "query", now=T0)

    store.discard("r1", index)

    assert store.get("r1") is None
    assert store.get_by_index(index) is None


def test_discard_frees_the_request_id_but_not_the_index(store: RequestStore) -> None:
    store.discard("r1", store.create("r1", "query", now=T0))

    assert store.create("r1", "query", now=T0) == 2


def test_mark_running_records_the_worker_and_start_time(store: RequestStore) -> None:
    store.create("r1", "command", now=T0)

    store.mark_running("r1", "w1@host", now=T0 + 5)

    state = state_of(store, "r1")
    assert (state.status, state.worker, state.started_at) == (RequestStatus.RUNNING, "w1@host", T0 + 5)
    assert state.finished_at is None


def test_set_progress_records_the_fraction_and_message(store: RequestStore) -> None:
    store.create("r1", "query", now=T0)
    store.mark_running("r1", "w1", now=T0 + 1)

    store.set_progress("r1", 0.25, "loading")
    store.set_progress("r1", 0.5)

    state = state_of(store, "r1")
    assert (state.status, state.progress, state.message) == (RequestStatus.RUNNING, 0.5, "")


@pytest.mark.parametrize(
    ("status", "details", "expected"),
    [
        (RequestStatus.DONE, {"exit_code": 0}, {"exit_code": 0, "error": None}),
        (
            RequestStatus.FAILED,
            {"exit_code": 3, "error": "command exited with code 3"},
            {"exit_code": 3, "error": "command exited with code 3"},
        ),
        (RequestStatus.CANCELLED, {}, {"exit_code": None, "error": None}),
    ],
)
def test_finish_records_the_outcome_and_end_time(
    store: RequestStore, status: RequestStatus, details: dict[str, int | str], expected: dict[str, object]
) -> None:
    store.create("r1", "command", now=T0)
    store.mark_running("r1", "w1", now=T0 + 1)

    store.finish("r1", status, now=T0 + 9, **details)

    state = state_of(store, "r1")
    assert state.status is status
    assert (state.started_at, state.finished_at, state.result_index) == (T0 + 1, T0 + 9, None)
    assert {name: getattr(state, name) for name in expected} == expected


def test_finish_update_applied_with_the_result_entry_records_its_index(
    client: fakeredis.FakeRedis, store: RequestStore
) -> None:
    sink = Sink(client, "svc")
    sink.append(b"a log line", {"requestId": "r1"})
    store.create("r1", "command", now=T0)
    store.mark_running("r1", "w1", now=T0 + 1)

    update = store.finish_update("r1", RequestStatus.FAILED, now=T0 + 9, exit_code=3, error="exit 3")
    index = sink.append(b"tail", {"requestId": "r1"}, then=update)

    assert index == 2
    state = state_of(store, "r1")
    assert (state.status, state.result_index, state.exit_code, state.error) == (RequestStatus.FAILED, 2, 3, "exit 3")
    assert state.finished_at == T0 + 9
    assert 0 < client.ttl(keys.request_state("svc", "r1")) <= FINISHED_STATE_TTL_S


def test_finish_update_describes_the_change_without_making_it(store: RequestStore) -> None:
    store.create("r1", "query", now=T0)

    update = store.finish_update("r1", RequestStatus.DONE, now=T0 + 2)

    assert update == HashUpdate(
        keys.request_state("svc", "r1"), {"status": "done", "finished_at": T0 + 2}, FINISHED_STATE_TTL_S
    )
    assert state_of(store, "r1").status is RequestStatus.QUEUED


@pytest.mark.parametrize("status", list(RequestStatus))
def test_only_done_failed_and_cancelled_are_finished(status: RequestStatus) -> None:
    assert status.finished is (status in {RequestStatus.DONE, RequestStatus.FAILED, RequestStatus.CANCELLED})


def test_finished_state_expires_after_the_ttl(client: fakeredis.FakeRedis, store: RequestStore) -> None:
    store.create("r1", "query", now=T0)
    key = keys.request_state("svc", "r1")
    assert client.ttl(key) == -1  # a live request never expires

    store.finish("r1", RequestStatus.DONE, now=T0 + 1)

    assert 0 < client.ttl(key) <= FINISHED_STATE_TTL_S
    assert client.ttl(key) > FINISHED_STATE_TTL_S - 60


def test_requeued_goes_back_to_queued_counting_retries(store: RequestStore) -> None:
    store.create("r1", "command", now=T0)
    store.mark_running("r1", "w1", now=T0 + 1)

    store.requeued("r1", "worker w1 died")
    store.mark_running("r1", "w2", now=T0 + 2)
    store.requeued("r1", "worker w2 died")

    state = state_of(store, "r1")
    assert (state.status, state.retries, state.message) == (RequestStatus.QUEUED, 2, "worker w2 died")
    assert (state.worker, state.started_at) == (None, None)
    assert (state.index, state.queued_at) == (1, T0)


def test_get_by_index_finds_the_request(store: RequestStore) -> None:
    store.create("r1", "query", now=T0)
    index = store.create("r2", "command", now=T0 + 1)

    state = store.get_by_index(index)
    assert state is not None
    assert (state.request_id, state.index, state.task_type) == ("r2", index, "command")


@pytest.mark.parametrize("index", [0, 2, 99])
def test_get_by_an_unknown_index_is_none(store: RequestStore, index: int) -> None:
    store.create("r1", "query", now=T0)

    assert store.get_by_index(index) is None


def test_get_of_an_unknown_request_id_is_none(store: RequestStore) -> None:
    assert store.get("nope") is None


@pytest.mark.parametrize(
    "update",
    [
        lambda store: store.mark_running("ghost", "w1", now=T0),
        lambda store: store.set_progress("ghost", 0.5, "half"),
        lambda store: store.finish("ghost", RequestStatus.DONE, now=T0),
        lambda store: store.requeued("ghost", "worker died"),
    ],
    ids=["mark_running", "set_progress", "finish", "requeued"],
)
def test_an_update_to_an_unknown_request_leaves_it_unknown(
    store: RequestStore, update: Callable[[RequestStore], None]
) -> None:
    # given a request whose state was discarded (or expired) while its task still ran
    store.discard("ghost", store.create("ghost", "query", now=T0))

    # when the worker reports on it
    update(store)

    # then the store does not claim to know it, nor fail on it
    assert store.get("ghost") is None


def test_a_request_put_through_a_front_end_is_mirrored_into_its_input_queue(
    client: fakeredis.FakeRedis, store: RequestStore
) -> None:
    tags = {"requestId": "r1", "taskType": "query", "user": "x"}
    index = store.create("r1", "query", frontend="web", data=b"body", tags=tags, now=T0)

    [(stream_id, fields)] = client.xrange(keys.input_stream("svc", "web"))
    assert (stream_id, fields[b"data"], fields[b"tags"]) == (f"{index}-0".encode(), b"body", encode_tags(tags))
    state = state_of(store, "r1")
    assert (state.frontend, state.status, state.index) == ("web", RequestStatus.QUEUED, index)
    assert store.get_by_index(index) == state
    with pytest.raises(RequestError, match="already in use"):
        store.create("r1", "query", frontend="web", data=b"", tags={}, now=T0)


def test_a_request_whose_enqueue_failed_is_forgotten_with_its_input_queue_entry(
    client: fakeredis.FakeRedis, store: RequestStore
) -> None:
    index = store.create("r1", "query", frontend="web", data=b"body", tags={}, now=T0)
    store.discard("r1", index, "web")
    assert (store.get("r1"), store.get_by_index(index), client.xlen(keys.input_stream("svc", "web"))) == (None, None, 0)
