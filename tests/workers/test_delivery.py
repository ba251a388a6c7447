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


@pytest.mark.parametrize(("buffered", "printed"), [(2, 5), (3, 1000)])
def test_a_full_buffer_while_the_broker_is_away_keeps_the_first_lines_and_one_notice_for_the_gap(
    server: fakeredis.FakeServer, store: RequestStore, sink: Sink, buffered: int, printed: int
) -> None:
    delivery = started(store, sink, max_buffered=buffered)
    server.connected = False
    for n in range(printed):
        delivery.log(f"line {n}".encode(), EntryType.LOG)
    server.connected = True

    assert delivery.finish(RequestStatus.DONE, b"tail", result_tags())

    entries = sink.read()
    assert [entry.data for entry in entries[:buffered]] == [f"line {n}".encode() for n in range(buffered)]
    notice, *rest = entries[buffered:]
    dropped = printed - buffered
    assert notice.tags["dropped"] == str(dropped) and f"{dropped} log line(s) dropped".encode() in notice.data
    assert b"the broker was unreachable" in notice.data
    assert [entry.data for entry in rest] == [b"tail"]


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


class SlowSink(Sink):
    """A sink whose appends wait for `gate`: Redis taking lines slower than a job prints them."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = threading.Event()

    def append_many(self, *args: object, **kwargs: object) -> int:
        self.gate.wait(10)
        return super().append_many(*args, **kwargs)  # type: ignore[arg-type]


def printing(delivery: Delivery, lines: int) -> threading.Event:
    """A job printing `lines` lines on a thread of its own; the event is set once it has printed them all."""
    printed = threading.Event()

    def job() -> None:
        for n in range(lines):
            delivery.log(f"line {n}".encode(), EntryType.LOG)
        printed.set()

    threading.Thread(target=job, daemon=True).start()
    return printed


@pytest.fixture
def slow_sink(server: fakeredis.FakeServer) -> SlowSink:
    return SlowSink(fakeredis.FakeRedis(server=server), "svc")


def test_a_job_printing_faster_than_the_broker_takes_lines_waits_for_room_and_loses_none(
    store: RequestStore, slow_sink: SlowSink
) -> None:
    # given a delivery whose outbox holds two writes, and a broker slower than its job
    delivery = started(store, slow_sink, max_buffered=2)
    # when the job prints more than the outbox holds, then it is held back, not run past its lines
    printed = printing(delivery, 6)
    assert not printed.wait(0.3)

    # and once the broker takes them, every line is written, in order, and none dropped
    slow_sink.gate.set()
    assert printed.wait(10)
    assert delivery.finish(RequestStatus.DONE, b"tail", result_tags())
    assert [entry.data for entry in slow_sink.read()] == [*(f"line {n}".encode() for n in range(6)), b"tail"]


def test_a_cancel_lets_a_job_waiting_for_room_run_on_to_be_stopped(store: RequestStore, slow_sink: SlowSink) -> None:
    # given a job held back by a full outbox
    delivery = started(store, slow_sink, max_buffered=2)
    printed = printing(delivery, 100)
    assert not printed.wait(0.2)

    # when it is cancelled, then it runs on (its runner can see the cancel and stop it), dropping what does not fit
    store.request_cancel("r1")
    slow_sink.gate.set()
    assert printed.wait(10)
    wait_until(lambda: delivery.stop_reason() == "cancelled", 5, "the cancel seen by the delivery")
    delivery.finish(RequestStatus.CANCELLED, b"cancelled", result_tags())
    gaps = [entry for entry in slow_sink.read(count=200) if "dropped" in entry.tags]
    assert len(gaps) == 1 and b"the job was stopping" in gaps[0].data


def test_a_finished_jobs_result_waits_for_the_broker_and_is_written_once_it_is_back(
    server: fakeredis.FakeServer, store: RequestStore, sink: Sink
) -> None:
    # given a finished job whose broker is away
    delivery = started(store, sink)
    delivery.log(b"last line", EntryType.LOG)
    server.connected = False
    outcome: list[object] = []
    writer = threading.Thread(
        target=lambda: outcome.append(delivery.finish(RequestStatus.DONE, b"tail", result_tags())), daemon=True
    )
    writer.start()

    # when it stays away, then the result waits (before, it waited up to a budget and then gave the job back)
    writer.join(1.0)
    assert writer.is_alive() and not outcome

    # then the result is written once it is back, and the job is not given back to run again
    server.connected = True
    writer.join(10)
    assert outcome == [True]
    assert [entry.data for entry in sink.read()] == [b"last line", b"tail"]


def test_a_broker_that_stalls_without_an_error_does_not_hold_the_job_back(
    store: RequestStore, slow_sink: SlowSink
) -> None:
    # given a broker that takes a write and answers nothing (a stopped redis-server raises no error)
    delivery = started(store, slow_sink, max_buffered=2, stalled_write_s=0.3)
    # when the job prints past the outbox, then it runs on once the write has stalled, its later lines dropped
    printed = printing(delivery, 50)
    assert printed.wait(5)
    slow_sink.gate.set()
    assert delivery.finish(RequestStatus.DONE, b"tail", result_tags())
    gaps = [entry for entry in slow_sink.read(count=100) if "dropped" in entry.tags]
    assert len(gaps) == 1 and b"the broker was unreachable" in gaps[0].data


def test_lines_queued_in_a_row_are_appended_in_one_call_in_order(store: RequestStore, slow_sink: SlowSink) -> None:
    # given a job that printed many lines while the broker was busy with its first
    delivery = started(store, slow_sink, max_buffered=1000)
    calls: list[int] = []
    append_many = slow_sink.append_many
    slow_sink.append_many = lambda entries, **kw: calls.append(len(entries)) or append_many(entries, **kw)  # type: ignore[method-assign]
    for n in range(600):
        delivery.log(f"line {n}".encode(), EntryType.LOG)

    # when the broker takes them, then they go in a few calls of many lines, in order, none lost
    slow_sink.gate.set()
    assert delivery.finish(RequestStatus.DONE, b"tail", result_tags())
    assert [entry.data for entry in slow_sink.read(count=700)] == [*(f"line {n}".encode() for n in range(600)), b"tail"]
    assert sum(calls) == 600 and len(calls) <= 4
    state = store.get("r1")
    assert state is not None and state.log_index == 1


class BrokenSink(Sink):
    """A sink whose appends raise what no broker outage raises: a bug on the writer's path."""

    def append_many(self, *args: object, **kwargs: object) -> int:
        raise RuntimeError("a bug in the writer's path")


def test_a_writer_that_fails_holds_neither_the_job_nor_its_result(
    server: fakeredis.FakeServer, store: RequestStore
) -> None:
    # given a delivery whose writer dies of a bug, with a job printing more than the outbox holds
    sink = BrokenSink(fakeredis.FakeRedis(server=server), "svc")
    delivery = started(store, sink, max_buffered=2)

    # when the job prints on and ends, then neither its lines nor its result wait for the dead writer
    assert printing(delivery, 50).wait(5)
    finished = threading.Event()
    threading.Thread(
        target=lambda: delivery.finish(RequestStatus.DONE, b"tail", result_tags()) and finished.set(), daemon=True
    ).start()
    assert finished.wait(5)
    state = store.get("r1")
    assert state is not None and state.status is RequestStatus.DONE
