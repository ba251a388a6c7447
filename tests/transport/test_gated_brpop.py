"""Idle first inside kombu: with a gate attached, the consumer's BRPOP listens only to the queues the gate has room
for, with a short timeout while one is left out; the watcher learns which connection it blocks on, and a wake-up
(CLIENT UNBLOCK) ends it at once. Real kombu channels on a real redis-server; Redis's MONITOR shows each BRPOP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from celery.worker import state as worker_state
from kombu import Connection
from kombu.utils.scheduling import round_robin_cycle
from transport_support import QUEUES, Brpop, CommandLog, Consuming, Gate, RecordingWaker, brpop_client_ids

from conftest import wait_until
from scalablejob.model.routing import TaskType
from scalablejob.transport import kombu_redis
from scalablejob.transport.kombu_redis import GATED_BRPOP_TIMEOUT_S, Transport, _GatedCycle
from scalablejob.upstream.redis_internals import connection_client_id
from scalablejob.workers.gate import SlotGate

pytestmark = pytest.mark.integration
pytest_plugins = ["transport_fixtures"]

BRPOP_TIMEOUT_S = Transport.brpop_timeout  # kombu's, while no queue is left out
LONG_S = 30.0  # a gated BRPOP that only a wake-up (or a message) ends within a test


@pytest.fixture
def long_gated_brpop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gated BRPOP stays pending for LONG_S, so that what ends it sooner is seen to be what the test did."""
    monkeypatch.setattr(kombu_redis, "GATED_BRPOP_TIMEOUT_S", LONG_S)


@pytest.fixture
def reserved() -> Iterator[object]:
    """Celery holds one reserved request (a SlotGate heals itself only while it holds none)."""
    request = type("Reserved", (), {})()
    worker_state.reserved_requests.add(request)
    yield request
    worker_state.reserved_requests.discard(request)


def pending_brpop(consuming: Consuming) -> None:
    """Let the consumer send its BRPOP and leave it pending."""
    assert consuming.takes_nothing_for(0.02)


# ---- which queues each BRPOP listens to --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("closed", "expected"),
    [
        ((), Brpop(QUEUES, BRPOP_TIMEOUT_S)),
        (("a",), Brpop(("b",), GATED_BRPOP_TIMEOUT_S)),
        (("b",), Brpop(("a",), GATED_BRPOP_TIMEOUT_S)),
        (("elsewhere",), Brpop(QUEUES, GATED_BRPOP_TIMEOUT_S)),  # the gate says a queue is out: short anyway
    ],
)
def test_each_brpop_listens_only_to_the_queues_with_room(
    consuming: Consuming, commands: CommandLog, closed: tuple[str, ...], expected: Brpop
) -> None:
    consuming.channel.gate_dispatch(Gate(closed))

    consuming.takes_nothing_for(0.01)

    assert commands.brpops(1) == [expected]


def test_no_brpop_is_sent_while_no_queue_has_room(
    consuming: Consuming, commands: CommandLog, redis_client: redis.Redis
) -> None:
    gate = Gate(QUEUES)
    consuming.channel.gate_dispatch(gate)

    assert consuming.takes_nothing_for(0.05)

    assert gate.asked >= 1
    assert [command for command in commands.settled(redis_client) if command[0] == "BRPOP"] == []


def test_the_brpops_follow_the_gate_from_one_to_the_next(consuming: Consuming, commands: CommandLog) -> None:
    gate = Gate()
    consuming.channel.gate_dispatch(gate)
    consuming.publish("a", "first")
    assert consuming.next_message().payload == "first"

    gate.closed = {"a"}
    consuming.publish("b", "second")
    assert consuming.next_message().payload == "second"

    gate.closed = set()
    consuming.publish("a", "third")
    assert consuming.next_message().payload == "third"

    assert [brpop.queues for brpop in commands.brpops(3)] == [QUEUES, ("b",), ("a", "b")]


def test_a_message_waits_while_its_queue_has_no_room_and_is_taken_once_it_has(
    consuming: Consuming, redis_client: redis.Redis
) -> None:
    # given a gate without room for queue a, and a message on each queue
    gate = Gate({"a"})
    consuming.channel.gate_dispatch(gate)
    consuming.publish("a", "on a")
    consuming.publish("b", "on b")

    # then the message on b is taken, the one on a stays in Redis
    assert consuming.next_message().payload == "on b"
    assert consuming.takes_nothing_for(0.3)
    assert redis_client.llen("a") == 1

    # when a slot frees, the message on a is taken
    gate.closed = set()
    assert consuming.next_message().payload == "on a"
    assert redis_client.llen("a") == 0


def test_a_new_gate_replaces_the_old_one(consuming: Consuming, commands: CommandLog) -> None:
    consuming.channel.gate_dispatch(Gate({"a"}))
    consuming.channel.gate_dispatch(Gate({"b"}))  # e.g. the consumer reconnected and the bootstep ran again

    consuming.takes_nothing_for(0.01)

    assert commands.brpops(1) == [Brpop(("a",), GATED_BRPOP_TIMEOUT_S)]


def test_the_channel_keeps_kombus_queue_cycle_even_when_the_gate_fails(consuming: Consuming) -> None:
    class BrokenGate(Gate):
        def has_room(self, queue: str) -> bool:
            raise RuntimeError("the gate broke")

    cycle = consuming.channel._queue_cycle
    consuming.channel.gate_dispatch(BrokenGate({"a"}))

    with pytest.raises(RuntimeError, match="the gate broke"):
        consuming.takes_nothing_for(0.01)

    assert consuming.channel._queue_cycle is cycle
    consuming.channel.gate_dispatch(Gate())
    consuming.publish("a", "after")
    assert consuming.next_message().payload == "after"
    assert consuming.channel._queue_cycle is cycle


# ---- a slot gate in the channel ----------------------------------------------------------------------------------


def slot_gate(*claims: TaskType) -> SlotGate:
    gate = SlotGate(slots={TaskType.COMMAND: 1, TaskType.QUERY: 1}, queues={"a": TaskType.COMMAND, "b": TaskType.QUERY})
    for n, task_type in enumerate(claims):
        gate.claim(f"r{n}", task_type)
    return gate


@pytest.mark.usefixtures("reserved")
def test_a_slot_gate_leaves_out_the_queue_of_a_full_type(consuming: Consuming, commands: CommandLog) -> None:
    consuming.channel.gate_dispatch(slot_gate(TaskType.COMMAND))

    consuming.takes_nothing_for(0.01)

    assert commands.brpops(1) == [Brpop(("b",), GATED_BRPOP_TIMEOUT_S)]


def test_a_slot_gate_heals_before_the_brpop_when_celery_reserves_nothing(
    consuming: Consuming, commands: CommandLog
) -> None:
    # given claims never released (a lost task_postrun) while Celery holds no reserved request
    assert len(worker_state.reserved_requests) == 0, "another test left a reserved request behind"
    gate = slot_gate(TaskType.COMMAND, TaskType.QUERY)
    consuming.channel.gate_dispatch(gate)

    # when the consumer sends its next BRPOP
    consuming.takes_nothing_for(0.01)

    # then it listens to every queue again
    assert commands.brpops(1) == [Brpop(QUEUES, BRPOP_TIMEOUT_S)]
    assert (gate.in_flight(TaskType.COMMAND), gate.in_flight(TaskType.QUERY)) == (0, 0)


# ---- the watcher and the wake-up ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("long_gated_brpop")
def test_the_watcher_learns_the_client_id_of_the_brpop_and_when_it_returned(
    consuming: Consuming, redis_url: str, redis_client: redis.Redis
) -> None:
    watcher = RecordingWaker(redis_url)
    gate = Gate()
    consuming.channel.gate_dispatch(gate, watcher)
    consuming.publish("a", "ungated")
    consuming.next_message()
    assert watcher.pending is None  # no queue left out: nothing to wake
    returns = watcher.returns
    assert returns >= 1

    # when a BRPOP leaves a queue out and stays pending
    gate.closed = {"a"}
    pending_brpop(consuming)

    # then the watcher holds the id Redis gave the connection blocked in it, and was told so before the BRPOP went
    blocked = wait_until(lambda: brpop_client_ids(redis_client), 2, "no client blocked in a BRPOP")
    assert [watcher.pending] == blocked == watcher.sent_ids[-1:]

    # and once its answer is read, the watcher knows it returned
    consuming.publish("b", "gated")
    assert consuming.next_message().payload == "gated"
    assert watcher.returns > returns and watcher.pending is None
    brpop_connection = consuming.channel.client.connection
    brpop_connection.send_command("CLIENT", "ID")
    assert set(watcher.sent_ids) == {brpop_connection.read_response()}
    assert connection_client_id(brpop_connection) == watcher.sent_ids[0]


@pytest.mark.usefixtures("long_gated_brpop")
def test_the_watcher_learns_the_new_client_id_after_the_brpop_connection_dropped(
    consuming: Consuming, redis_url: str, redis_client: redis.Redis
) -> None:
    watcher = RecordingWaker(redis_url)
    consuming.channel.gate_dispatch(Gate({"a"}), watcher)
    pending_brpop(consuming)
    (first,) = watcher.sent_ids

    redis_client.client_kill_filter(_id=first)
    with pytest.raises(redis.ConnectionError):
        consuming.takes_nothing_for(1.0)
    pending_brpop(consuming)  # kombu reconnects and sends the BRPOP again

    assert watcher.sent_ids[0] == first and len(watcher.sent_ids) == 2
    assert watcher.sent_ids[1] != first
    assert wait_until(lambda: brpop_client_ids(redis_client), 2, "no BRPOP") == [watcher.sent_ids[1]]


@pytest.mark.usefixtures("long_gated_brpop")
def test_a_wake_up_ends_the_pending_brpop_at_once_and_the_reopened_queue_is_served(
    consuming: Consuming, redis_url: str, redis_client: redis.Redis
) -> None:
    # given a message waiting on queue a, which has no room, while the consumer's BRPOP listens to b only
    waker = RecordingWaker(redis_url)
    gate = Gate({"a"})
    consuming.channel.gate_dispatch(gate, waker)
    consuming.publish("a", "waiting")
    pending_brpop(consuming)
    wait_until(lambda: brpop_client_ids(redis_client), 2, "no BRPOP pending")
    assert consuming.takes_nothing_for(0.1)  # the BRPOP stays pending: it is the one the test sent

    # when a slot frees and the waker is told
    gate.closed = set()
    began = time.monotonic()
    waker.wake()
    message = consuming.next_message(timeout=BRPOP_TIMEOUT_S)  # far sooner than the pending BRPOP's timeout

    # then the BRPOP ended at once, and the next one took the waiting message
    assert message.payload == "waiting"
    assert time.monotonic() - began < BRPOP_TIMEOUT_S / 2
    assert waker.returns >= 1


class SlotFreedWhileAsked(Gate):
    """A gate whose full queue gets a free slot just after the channel asked it, from a task's thread, as happens
    when a task ends while the consumer is between asking the gate and its BRPOP reaching Redis."""

    def __init__(self, closed: set[str], waker: RecordingWaker) -> None:
        super().__init__(closed)
        self._waker = waker
        self.freed: threading.Thread | None = None
        self.pending_when_asked: int | None = None

    def before_brpop(self) -> bool:
        hidden = super().before_brpop()
        if hidden and self.freed is None:
            self.pending_when_asked = self._waker.pending
            self.closed = set()
            self.freed = threading.Thread(target=self._waker.wake)
            self.freed.start()
        return hidden


@pytest.mark.usefixtures("long_gated_brpop")
def test_a_slot_freed_while_the_brpop_is_being_sent_still_wakes_it(consuming: Consuming, redis_url: str) -> None:
    # given a message waiting on queue a, which has no room, and an idle consumer
    waker = RecordingWaker(redis_url)
    gate = SlotFreedWhileAsked({"a"}, waker)
    consuming.channel.gate_dispatch(gate, waker)
    consuming.publish("a", "waiting")
    began = time.monotonic()

    # when a's slot frees right after the gate said it was full, before the BRPOP (which leaves a out) is in Redis
    message = consuming.next_message(timeout=BRPOP_TIMEOUT_S)
    assert gate.freed is not None
    gate.freed.join()

    # then the waker already knew that BRPOP when the gate was asked, so the freed slot woke it, and the next BRPOP
    # took the message long before the gated one's own timeout
    assert gate.pending_when_asked == waker.sent_ids[0] == connection_client_id(consuming.channel.client.connection)
    assert message.payload == "waiting"
    assert time.monotonic() - began < BRPOP_TIMEOUT_S / 2


# ---- the gated view of kombu's queue cycle -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("closed", "visible"),
    [((), ["a", "b", "c"]), (("a",), ["b", "c"]), (("a", "c"), ["b"]), (("a", "b", "c"), [])],
)
def test_the_gated_cycle_hides_the_queues_without_room(closed: tuple[str, ...], visible: list[str]) -> None:
    assert _GatedCycle(round_robin_cycle(["a", "b", "c"]), Gate(closed)).consume(3) == visible


def test_the_gated_cycle_filters_only_what_the_cycle_gives() -> None:
    assert _GatedCycle(round_robin_cycle(["a", "b", "c"]), Gate({"b"})).consume(2) == ["a"]


def test_the_gated_cycle_passes_the_rest_to_kombus_cycle() -> None:
    cycle = round_robin_cycle(["a", "b", "c"])
    gated = _GatedCycle(cycle, Gate({"c"}))

    gated.rotate("a")

    assert cycle.consume(3) == ["b", "c", "a"]
    assert gated.items is cycle.items


def test_a_channel_without_a_gate_is_kombus(connection: Connection, commands: CommandLog) -> None:
    consuming = Consuming(connection)

    consuming.takes_nothing_for(0.01)

    assert commands.brpops(1) == [Brpop(QUEUES, BRPOP_TIMEOUT_S)]
