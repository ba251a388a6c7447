"""A delivery's writes: in order, through a broker outage (buffered, bounded), and refused once it is superseded."""

from __future__ import annotations

import threading

import fakeredis
import pytest

from conftest import wait_until
from scalablejob.store.sink import EntryType, Sink, entry_tags
from scalablejob.store.state import RequestStatus, RequestStore
from scalablejob.workers.delivery import SUPERSEDED, Delivery


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def store(server: fakeredis.FakeServer) -> RequestStore:
    return RequestStore(fakeredis.FakeRedis(server=server), "svc")


@pytest.fixture
def sink(server: fakeredis.FakeServer) -> Sink:
    return Sink(fakeredis.FakeRedis(server=server), "svc")


def started(store: RequestStore, sink: Sink, request_id: str = "r1", **options: float) -> Delivery:
    store.create(request_id, "command")
    attempt = store.mark_running(request_id, "w1")
    return Delivery(store, sink, request_id, "command", attempt, watch_s=0.01, **options)  # type: ignore[arg-type]


def result_tags() -> dict[str, str]:
    return entry_tags("r1", "command", EntryType.RESULT)


def test_lines_progress_and_the_result_are_written_in_order(store: RequestStore, sink: Sink) -> None:
    delivery = started(store, sink)
    for n in range(3):
        delivery.log(f"line {n}".encode(), EntryType.LOG, stream="stdout")
    delivery.progress(0.5, "half")

    assert delivery.finish(RequestStatus.DONE, b"tail", result_tags())

    assert [entry.data for entry in sink.read()] == [b"line 0", b"line 1", b"line 2", b"tail"]
    state = store.get("r1")
    assert state is not None and (state.status, state.progress, state.log_index) == (RequestStatus.DONE, 0.5, 1)


def test_a_broker_outage_holds_the_writes_without_blocking_the_job_and_flushes_them_in_order(
    server: fakeredis.FakeServer, store: RequestStore, sink: Sink
) -> None:
    # given a delivery whose broker goes away
    delivery = started(store, sink)
    delivery.log(b"before", EntryType.LOG)
    wait_until(lambda: sink.length() == 1, 5, "the first line written")
    server.connected = False

    # when the job goes on printing and ends while the broker is away
    for n in range(3):
        delivery.log(f"during {n}".encode(), EntryType.LOG)  # returns at once: the job is not held up
    assert delivery.stop_reason() is None  # a cancel check does not wait for the broker either
    finished = threading.Event()
    threading.Thread(
        target=lambda: delivery.finish(RequestStatus.DONE, b"tail", result_tags()) and finished.set(), daemon=True
    ).start()
    assert not finished.wait(0.3)

    # then, once the broker is back, everything is written in order and the result last, once
    server.connected = True
    assert finished.wait(10)
    assert [entry.data for entry in sink.read()] == [b"before", b"during 0", b"during 1", b"during 2", b"tail"]


def test_a_full_buffer_drops_later_lines_and_says_how_many_where_the_gap_is(
    server: fakeredis.FakeServer, store: RequestStore, sink: Sink
) -> None:
    delivery = started(store, sink, max_buffered=2)
    server.connected = False
    for n in range(5):
        delivery.log(f"line {n}".encode(), EntryType.LOG)
    server.connected = True

    assert delivery.finish(RequestStatus.DONE, b"tail", result_tags())

    entries = sink.read()
    assert [entry.data for entry in entries][:2] == [b"line 0", b"line 1"]
    assert entries[2].tags["dropped"] == "3" and b"3 log line(s) dropped" in entries[2].data
    assert entries[-1].data == b"tail"


def test_a_superseded_delivery_stops_writing_and_its_job_is_told_to_stop(store: RequestStore, sink: Sink) -> None:
    # given a delivery whose request was requeued and started again elsewhere (it was frozen meanwhile)
    delivery = started(store, sink)
    store.requeued("r1", "worker w1 stopped answering")
    current = store.mark_running("r1", "w2")

    # when it writes again, then nothing of it lands, and its job is told to stop
    delivery.log(b"late line", EntryType.LOG)
    wait_until(lambda: delivery.stop_reason() == SUPERSEDED, 5, "the delivery seeing it was superseded")
    assert not delivery.finish(RequestStatus.DONE, b"late result", result_tags())
    assert sink.length() == 0
    state = store.get("r1")
    assert state is not None and (state.status, state.attempt, state.worker) == (RequestStatus.RUNNING, current, "w2")


def test_a_cancel_reaches_the_running_job(store: RequestStore, sink: Sink) -> None:
    delivery = started(store, sink)
    assert delivery.stop_reason() is None

    store.request_cancel("r1")

    wait_until(lambda: delivery.stop_reason() == "cancelled", 5, "the cancel seen by the delivery")
    delivery.close()
