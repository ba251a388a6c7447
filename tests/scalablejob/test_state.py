"""Request state in Redis: creation with unique ids and indexes, the status transitions, and expiry once finished."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import fakeredis
import pytest

from scalablejob.api.celery_app import make_app
from scalablejob.api.client import new_request
from scalablejob.model import keys
from scalablejob.model.errors import RequestError
from scalablejob.model.routing import TaskType
from scalablejob.scaler.paging import open_ids
from scalablejob.store.sink import EntryType, Sink, SinkEntry, encode_tags, entry_tags
from scalablejob.store.state import (
    CANCEL_ASKED,
    FINISHED_STATE_TTL_S,
    FrontEndRequests,
    RequestState,
    RequestStatus,
    RequestStore,
    UnackedMessage,
)

T0 = 1_700_000_000.0
T = TypeVar("T")
Ask = Callable[[FrontEndRequests], Coroutine[Any, Any, T]]


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> RequestStore:
    return RequestStore(client, "svc")


@pytest.fixture
def sink(client: fakeredis.FakeRedis) -> Sink:
    return Sink(client, "svc")


def state_of(store: RequestStore, request_id: str) -> RequestState:
    state = store.get(request_id)
    assert state is not None, f"no state for {request_id}"
    return state


def as_front_end(server: fakeredis.FakeServer, frontend: str, ask: Ask[T]) -> T:
    """What front end `frontend` of service svc (on redis.asyncio, as the front end runs) answers."""

    async def run() -> T:
        async with fakeredis.FakeAsyncRedis(server=server) as async_client:
            return await ask(FrontEndRequests(async_client, "svc", frontend))

    return asyncio.run(run())


def at_index(server: fakeredis.FakeServer, index: int, frontend: str = "svc") -> RequestState | None:
    return as_front_end(server, frontend, lambda requests: requests.at_index(index))


def finish(store: RequestStore, sink: Sink, request_id: str, status: RequestStatus, **details: Any) -> int:
    """End a request as a worker does: its final entry and its end state in one step; returns the entry's index."""
    tags = entry_tags(request_id, "command", EntryType.RESULT)
    return store.finish(sink, request_id, status, b"tail", tags, now=T0 + 9, **details)


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


def test_discard_forgets_the_request_and_its_index(server: fakeredis.FakeServer, store: RequestStore) -> None:
    index = store.create("r1", "query", now=T0)

    store.discard("r1", index)

    assert store.get("r1") is None
    assert at_index(server, index) is None


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
def test_the_final_entry_records_the_outcome_and_end_time(
    store: RequestStore,
    sink: Sink,
    status: RequestStatus,
    details: dict[str, int | str],
    expected: dict[str, object],
) -> None:
    store.create("r1", "command", now=T0)
    store.mark_running("r1", "w1", now=T0 + 1)

    index = finish(store, sink, "r1", status, **details)

    state = state_of(store, "r1")
    assert state.status is status
    assert (state.started_at, state.finished_at, state.result_index) == (T0 + 1, T0 + 9, index)
    assert {name: getattr(state, name) for name in expected} == expected


def test_the_final_entry_goes_to_the_sink_with_its_index_in_the_state(
    client: fakeredis.FakeRedis, store: RequestStore, sink: Sink
) -> None:
    sink.append(b"a log line", {"requestId": "r1"})
    store.create("r1", "command", now=T0)
    store.mark_running("r1", "w1", now=T0 + 1)

    index = store.finish(
        sink, "r1", RequestStatus.FAILED, b"tail", {"requestId": "r1"}, now=T0 + 9, exit_code=3, error="exit 3"
    )

    assert index == 2
    assert sink.get(index) == SinkEntry(index=2, data=b"tail", tags={"requestId": "r1"})
    state = state_of(store, "r1")
    assert (state.status, state.result_index, state.exit_code, state.error) == (RequestStatus.FAILED, 2, 3, "exit 3")
    assert state.finished_at == T0 + 9
    assert 0 < client.ttl(keys.request_state("svc", "r1")) <= FINISHED_STATE_TTL_S


def test_the_final_entry_of_a_request_that_is_gone_is_written_but_does_not_recreate_it(
    client: fakeredis.FakeRedis, store: RequestStore, sink: Sink
) -> None:
    # given a request whose state expired (or was discarded) while its task still ran
    # when its worker writes the result
    index = store.finish(sink, "gone", RequestStatus.DONE, b"late", {"requestId": "gone"}, now=T0)

    # then the reader of the sink gets it, and the store does not claim to know the request
    assert [(entry.index, entry.data) for entry in sink.read()] == [(index, b"late")]
    assert store.get("gone") is None
    assert client.exists(keys.request_state("svc", "gone")) == 0


@pytest.mark.parametrize("status", list(RequestStatus))
def test_only_done_failed_and_cancelled_are_finished(status: RequestStatus) -> None:
    assert status.finished is (status in {RequestStatus.DONE, RequestStatus.FAILED, RequestStatus.CANCELLED})


def test_finished_state_expires_after_the_ttl(client: fakeredis.FakeRedis, store: RequestStore, sink: Sink) -> None:
    store.create("r1", "query", now=T0)
    key = keys.request_state("svc", "r1")
    assert client.ttl(key) == -1  # a live request never expires

    finish(store, sink, "r1", RequestStatus.DONE)

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


def test_a_front_end_finds_its_request_by_index(server: fakeredis.FakeServer, store: RequestStore) -> None:
    store.create("r1", "query", now=T0)
    index = store.create("r2", "command", now=T0 + 1)

    state = at_index(server, index)
    assert state is not None
    assert (state.request_id, state.index, state.task_type) == ("r2", index, "command")


@pytest.mark.parametrize("index", [0, 2, 99])
def test_a_front_end_finds_nothing_at_an_unknown_index(
    server: fakeredis.FakeServer, store: RequestStore, index: int
) -> None:
    store.create("r1", "query", now=T0)

    assert at_index(server, index) is None


def test_another_front_ends_request_is_unknown_here(server: fakeredis.FakeServer, store: RequestStore) -> None:
    index = store.create("r1", "query", frontend="web", data=b"", tags={}, now=T0)

    assert at_index(server, index, "web") is not None
    assert (at_index(server, index, "svc"), at_index(server, index, "app")) == (None, None)
    assert as_front_end(server, "app", lambda requests: requests.get("r1")) is None


def test_get_of_an_unknown_request_id_is_none(store: RequestStore) -> None:
    assert store.get("nope") is None


def test_require_of_an_unknown_request_id_raises_naming_it_and_the_service(store: RequestStore) -> None:
    with pytest.raises(RequestError, match=r"^requestId 'nope' is unknown to service svc$"):
        store.require("nope")


def test_require_returns_the_state_of_a_known_request(store: RequestStore) -> None:
    store.create("r1", "query", now=T0)

    assert store.require("r1") == state_of(store, "r1")


@pytest.mark.parametrize(
    "update",
    [
        lambda store, sink: store.mark_running("ghost", "w1", now=T0),
        lambda store, sink: store.set_progress("ghost", 0.5, "half"),
        lambda store, sink: store.set_log_index("ghost", 3),
        lambda store, sink: store.request_cancel("ghost"),
        lambda store, sink: finish(store, sink, "ghost", RequestStatus.DONE),
        lambda store, sink: store.requeued("ghost", "worker died"),
    ],
    ids=["mark_running", "set_progress", "set_log_index", "request_cancel", "finish", "requeued"],
)
def test_an_update_to_an_unknown_request_leaves_it_unknown(
    store: RequestStore, sink: Sink, update: Callable[[RequestStore, Sink], None]
) -> None:
    # given a request whose state was discarded (or expired) while its task still ran
    store.discard("ghost", store.create("ghost", "query", now=T0))

    # when the worker reports on it
    update(store, sink)

    # then the store does not claim to know it, nor fail on it
    assert store.get("ghost") is None


def test_a_request_put_through_a_front_end_is_mirrored_into_its_input_queue(
    server: fakeredis.FakeServer, client: fakeredis.FakeRedis, store: RequestStore
) -> None:
    tags = {"requestId": "r1", "taskType": "query", "user": "x"}
    index = store.create("r1", "query", frontend="web", data=b"body", tags=tags, now=T0)

    [(stream_id, fields)] = client.xrange(keys.input_stream("svc", "web"))
    assert (stream_id, fields[b"data"], fields[b"tags"]) == (f"{index}-0".encode(), b"body", encode_tags(tags))
    state = state_of(store, "r1")
    assert (state.frontend, state.status, state.index) == ("web", RequestStatus.QUEUED, index)
    assert at_index(server, index, "web") == state
    with pytest.raises(RequestError, match="already in use"):
        store.create("r1", "query", frontend="web", data=b"", tags={}, now=T0)


def test_a_request_whose_enqueue_failed_is_forgotten_with_its_input_queue_entry(
    server: fakeredis.FakeServer, client: fakeredis.FakeRedis, store: RequestStore
) -> None:
    index = store.create("r1", "query", frontend="web", data=b"body", tags={}, now=T0)
    store.discard("r1", index, "web")
    assert (store.get("r1"), at_index(server, index, "web")) == (None, None)
    assert client.xlen(keys.input_stream("svc", "web")) == 0


def test_the_final_entry_goes_to_its_front_ends_sink_and_takes_the_request_off_its_input_queue(
    client: fakeredis.FakeRedis, store: RequestStore
) -> None:
    store.create("r1", "query", frontend="web", data=b"in", tags={}, now=T0)
    other = store.create("r2", "query", frontend="web", data=b"in", tags={}, now=T0)
    web = Sink(client, "svc", frontend="web")
    web.append(b"50%", entry_tags("r1", "query", EntryType.PROGRESS))
    assert client.xlen(keys.input_stream("svc", "web")) == 2  # not finished: still waiting in the input queue

    result = finish(store, web, "r1", RequestStatus.DONE)

    state = state_of(store, "r1")
    assert (state.status, state.result_index, state.frontend) == (RequestStatus.DONE, result, "web")
    assert [entry.data for entry in web.read()] == [b"50%", b"tail"]
    remaining = client.xrange(keys.input_stream("svc", "web"))
    assert [stream_id for stream_id, _ in remaining] == [f"{other}-0".encode()]  # r1 left, r2 waits
    assert Sink(client, "svc").length() == 0  # nothing went to the service's own output queue


def test_a_request_remembers_where_its_output_can_start(client: fakeredis.FakeRedis, store: RequestStore) -> None:
    web = Sink(client, "svc", frontend="web")
    web.append(b"earlier", {})
    web.append(b"earlier", {})

    store.create("r1", "query", frontend="web", data=b"", tags={}, now=T0)

    assert state_of(store, "r1").sink_from == 2


def test_withdrawing_input_items_flags_the_requests_that_have_not_ended(
    server: fakeredis.FakeServer, client: fakeredis.FakeRedis, store: RequestStore
) -> None:
    # given three requests of front end web: queued, running, and done
    indexes = [store.create(f"r{n}", "query", frontend="web", data=b"", tags={}, now=T0) for n in range(3)]
    store.mark_running("r1", "w1", now=T0)
    finish(store, Sink(client, "svc", frontend="web"), "r2", RequestStatus.DONE)
    items = [SinkEntry(index, b"", {"requestId": f"r{n}"}) for n, index in enumerate(indexes)]

    # when the front end withdraws their items
    removed = as_front_end(server, "web", lambda requests: requests.withdraw(items))

    # then the items still waiting leave the input queue, and only the unfinished requests are to be cancelled
    assert removed == 2
    assert client.xlen(keys.input_stream("svc", "web")) == 0
    assert [state_of(store, f"r{n}").cancel_requested for n in range(3)] == [True, True, False]
    assert as_front_end(server, "web", lambda requests: requests.withdraw([])) == 0


def test_each_start_is_a_new_attempt_and_fences_the_writes_of_the_one_before(store: RequestStore, sink: Sink) -> None:
    # given a request started by w1, then requeued and started again by w2
    store.create("r1", "command", now=T0)
    first = store.mark_running("r1", "w1", now=T0 + 1)
    assert store.requeued("r1", "worker w1 stopped answering")
    second = store.mark_running("r1", "w2", now=T0 + 2)
    assert (first, second) == (1, 3)  # the requeue bumped it too: w1 was fenced before w2 started

    # when w1 resumes and writes, then every write of its old attempt is refused
    assert not store.set_progress("r1", 0.9, "late", attempt=first)
    assert sink.append(b"late line", {"requestId": "r1"}, fence=store.fence("r1", first)) == 0
    assert finish(store, sink, "r1", RequestStatus.DONE, attempt=first) == 0
    assert not store.requeued("r1", "w1 gives it back", attempt=first)

    # and w2's writes go through, ending the request once
    assert store.set_progress("r1", 0.5, "half", attempt=second)
    assert sink.append(b"line", {"requestId": "r1"}, fence=store.fence("r1", second)) == 1
    assert finish(store, sink, "r1", RequestStatus.DONE, attempt=second) == 2
    state = state_of(store, "r1")
    assert (state.status, state.worker, state.progress, state.attempt) == (RequestStatus.DONE, "w2", 0.5, second)
    assert [entry.data for entry in sink.read()] == [b"line", b"tail"]


def test_a_request_has_one_final_entry_a_second_finish_writes_nothing(store: RequestStore, sink: Sink) -> None:
    store.create("r1", "query", now=T0)
    attempt = store.mark_running("r1", "w1", now=T0 + 1)

    assert finish(store, sink, "r1", RequestStatus.DONE, attempt=attempt) == 1
    assert finish(store, sink, "r1", RequestStatus.FAILED) == 0  # e.g. a cancel that came too late

    assert state_of(store, "r1").status is RequestStatus.DONE
    assert sink.length() == 1


def test_an_ended_request_is_not_started_again_nor_requeued(store: RequestStore, sink: Sink) -> None:
    store.create("r1", "query", now=T0)
    store.mark_running("r1", "w1", now=T0 + 1)
    finish(store, sink, "r1", RequestStatus.DONE)

    assert store.mark_running("r1", "w2", now=T0 + 2) == -1  # a duplicate message: its worker must not run it
    assert not store.requeued("r1", "worker w1 died")
    assert store.mark_running("gone", "w2") == 0
    assert state_of(store, "r1").status is RequestStatus.DONE


def test_the_open_requests_are_read_from_every_front_ends_input_queue(store: RequestStore, sink: Sink) -> None:
    ids = [f"r{n}" for n in range(7)]
    for n, request_id in enumerate(ids):
        store.create(request_id, "query", frontend="other" if n % 2 else None, tags={"requestId": request_id})
    finish(store, sink, "r2", RequestStatus.DONE)

    assert open_ids(store) == set(ids) - {"r2"}
    state = state_of(store, "r1")
    entry = store.input_entry(state)
    assert entry is not None and entry.request_id == "r1"


def test_a_request_cancelled_while_queued_is_not_started(store: RequestStore) -> None:
    store.create("r1", "command", now=T0)
    store.request_cancel("r1")

    assert store.mark_running("r1", "w1", now=T0 + 1) == -2
    state = state_of(store, "r1")
    assert (state.status, state.attempt, state.worker) == (RequestStatus.QUEUED, 0, None)


def test_a_result_that_came_after_a_cancel_is_not_written_when_asked(store: RequestStore, sink: Sink) -> None:
    store.create("r1", "query", now=T0)
    attempt = store.mark_running("r1", "w1", now=T0 + 1)
    store.request_cancel("r1")

    assert finish(store, sink, "r1", RequestStatus.DONE, attempt=attempt, unless_cancelled=True) == CANCEL_ASKED
    assert sink.length() == 0 and state_of(store, "r1").status is RequestStatus.RUNNING
    assert finish(store, sink, "r1", RequestStatus.CANCELLED, attempt=attempt) == 1


def unacked(client: fakeredis.FakeRedis, tag: str) -> tuple[bool, bool]:
    """Whether kombu's unacked hash, and its index, still hold the message `tag`."""
    return client.hexists("unacked", tag), client.zscore("unacked_index", tag) is not None


def test_the_final_entry_acknowledges_the_message_in_the_same_step(
    store: RequestStore, sink: Sink, client: fakeredis.FakeRedis
) -> None:
    # given two requests whose messages a worker took (kombu keeps them in `unacked` until acknowledged)
    for request_id in ("r1", "r2"):
        store.create(request_id, "query", now=T0)
        client.hset("unacked", f"tag-{request_id}", b"[message]")
        client.zadd("unacked_index", {f"tag-{request_id}": T0})
    first = store.mark_running("r1", "w1", now=T0 + 1)
    store.mark_running("r2", "w1", now=T0 + 1)
    store.requeued("r2", "the scaler gave it to another worker")

    # when each ends with its message: r1 as its current delivery, r2 as a stale one (refused)
    assert finish(store, sink, "r1", RequestStatus.DONE, attempt=first, message=UnackedMessage("tag-r1")) == 1
    assert finish(store, sink, "r2", RequestStatus.DONE, attempt=first, message=UnackedMessage("tag-r2")) == 0

    # then only the message of the entry written is acknowledged
    assert unacked(client, "tag-r1") == (False, False)
    assert unacked(client, "tag-r2") == (True, True)


def test_one_read_gives_the_last_index_the_state_and_the_final_entry(store: RequestStore, sink: Sink) -> None:
    store.create("r1", "query", now=T0)
    sink.append(b"someone else's", {"requestId": "other"})
    last, state, entry = store.outcome("r1", sink)
    assert (last, state.status, entry) == (1, RequestStatus.QUEUED, None)

    finish(store, sink, "r1", RequestStatus.DONE)
    last, state, entry = store.outcome("r1", sink)
    assert (last, state.status) == (2, RequestStatus.DONE)
    assert entry is not None and (entry.index, entry.request_id, entry.data) == (2, "r1", b"tail")
    with pytest.raises(RequestError, match="'ghost' is unknown to service svc"):
        store.outcome("ghost", sink)


def test_a_front_end_records_and_queues_a_request_as_the_client_does(
    server: fakeredis.FakeServer, client: fakeredis.FakeRedis, store: RequestStore
) -> None:
    app = make_app("svc", "redis://unused")
    request = new_request(app, "svc", "web", b"body", {"requestId": "r1"}, (TaskType.QUERY, None))

    index = as_front_end(server, "web", lambda requests: requests.create(request))

    state = state_of(store, "r1")
    assert (index, state.status, state.frontend, state.task_type) == (1, RequestStatus.QUEUED, "web", "query")
    assert client.lrange(request.message.list_key, 0, -1) == [request.message.payload.encode()]
    assert store.input_entry(state) is not None
    as_front_end(server, "web", lambda requests: requests.discard("r1", index))
    assert store.get("r1") is None and client.xlen(keys.input_stream("svc", "web")) == 0
