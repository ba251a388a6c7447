"""Idle first: the slot gate counts tasks in flight per type and tells the channel, before each BRPOP, which queues
have room (the channel's side, on real kombu and Redis, is in tests/transport/test_gated_brpop.py)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import redis
from celery.worker import state as worker_state
from kombu import Connection, Consumer, Exchange, Producer, Queue

from scalablejob.model.routing import TaskType
from scalablejob.transport.acks import FinishAcks
from scalablejob.transport.kombu_redis import Transport
from scalablejob.workers.gate import GateStep, SlotGate

COMMAND_QUEUE = "svc.command"
QUERY_QUEUE = "svc.query"
FOREIGN_QUEUE = "celery"


def make_gate() -> SlotGate:
    return SlotGate(
        slots={TaskType.COMMAND: 1, TaskType.QUERY: 2},
        queues={COMMAND_QUEUE: TaskType.COMMAND, QUERY_QUEUE: TaskType.QUERY},
    )


def claimed(*types: TaskType) -> SlotGate:
    """A gate with one claim per given type, request ids r0, r1, ..."""
    gate = make_gate()
    for n, task_type in enumerate(types):
        gate.claim(f"r{n}", task_type)
    return gate


class _Reserved:
    """Stands in for a celery Request held in `reserved_requests` (a WeakSet)."""


@pytest.fixture
def reserved() -> Iterator[_Reserved]:
    """Celery holds one reserved request for the duration of the test."""
    request = _Reserved()
    worker_state.reserved_requests.add(request)
    yield request
    worker_state.reserved_requests.discard(request)


@pytest.fixture
def nothing_reserved() -> None:
    assert len(worker_state.reserved_requests) == 0, "another test left a reserved request behind"


# ---- SlotGate ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "command_room", "query_room"),
    [
        ((), True, True),
        ((TaskType.COMMAND,), False, True),
        ((TaskType.QUERY,), True, True),
        ((TaskType.QUERY, TaskType.QUERY), True, False),
        ((TaskType.COMMAND, TaskType.QUERY), False, True),
        ((TaskType.COMMAND, TaskType.QUERY, TaskType.QUERY), False, False),
    ],
)
def test_has_room_per_queue_by_type(claims: tuple[TaskType, ...], command_room: bool, query_room: bool) -> None:
    gate = claimed(*claims)

    assert (gate.has_room(COMMAND_QUEUE), gate.has_room(QUERY_QUEUE)) == (command_room, query_room)


@pytest.mark.parametrize("claims", [(), (TaskType.COMMAND,), (TaskType.COMMAND, TaskType.QUERY, TaskType.QUERY)])
def test_a_foreign_queue_always_has_room(claims: tuple[TaskType, ...]) -> None:
    assert claimed(*claims).has_room(FOREIGN_QUEUE)


def test_a_type_with_no_slots_never_has_room() -> None:
    gate = SlotGate(slots={TaskType.COMMAND: 1}, queues={QUERY_QUEUE: TaskType.QUERY})

    assert not gate.has_room(QUERY_QUEUE)


def test_claim_and_release_count_in_flight_per_type() -> None:
    gate = claimed(TaskType.COMMAND, TaskType.QUERY, TaskType.QUERY)
    assert (gate.in_flight(TaskType.COMMAND), gate.in_flight(TaskType.QUERY)) == (1, 2)

    gate.release("r1")
    assert (gate.in_flight(TaskType.COMMAND), gate.in_flight(TaskType.QUERY)) == (1, 1)
    assert gate.has_room(QUERY_QUEUE)

    gate.release("r0")
    assert gate.in_flight(TaskType.COMMAND) == 0
    assert gate.has_room(COMMAND_QUEUE)


def test_claiming_the_same_request_twice_counts_it_once() -> None:
    gate = make_gate()
    gate.claim("r1", TaskType.QUERY)
    gate.claim("r1", TaskType.QUERY)

    assert gate.in_flight(TaskType.QUERY) == 1


@pytest.mark.parametrize("request_id", ["unknown", "r0"])
def test_releasing_an_unknown_or_released_request_is_harmless(request_id: str) -> None:
    gate = claimed(TaskType.COMMAND, TaskType.QUERY)
    gate.release("r0")

    gate.release(request_id)

    assert (gate.in_flight(TaskType.COMMAND), gate.in_flight(TaskType.QUERY)) == (0, 1)


def test_reset_forgets_every_claim() -> None:
    gate = claimed(TaskType.COMMAND, TaskType.QUERY, TaskType.QUERY)

    gate.reset()

    assert (gate.in_flight(TaskType.COMMAND), gate.in_flight(TaskType.QUERY)) == (0, 0)
    assert gate.has_room(COMMAND_QUEUE)
    assert gate.has_room(QUERY_QUEUE)


def test_a_held_off_type_has_no_room_until_its_time_is_up() -> None:
    now = [100.0]
    gate = SlotGate(
        slots={TaskType.COMMAND: 1, TaskType.QUERY: 2},
        queues={COMMAND_QUEUE: TaskType.COMMAND, QUERY_QUEUE: TaskType.QUERY}, clock=lambda: now[0],
    )  # fmt: skip
    gate.hold_off(TaskType.QUERY, 1.0)
    assert (gate.has_room(QUERY_QUEUE), gate.has_room(COMMAND_QUEUE), gate.any_full()) == (False, True, True)
    now[0] = 101.0
    assert (gate.has_room(QUERY_QUEUE), gate.any_full()) == (True, False)


# ---- before each BRPOP -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("reserved")
@pytest.mark.parametrize(
    ("claims", "hidden"),
    [
        ((), False),
        ((TaskType.QUERY,), False),
        ((TaskType.COMMAND,), True),
        ((TaskType.QUERY, TaskType.QUERY), True),
    ],
)
def test_before_brpop_says_whether_some_queue_is_left_out(claims: tuple[TaskType, ...], hidden: bool) -> None:
    assert claimed(*claims).before_brpop() is hidden


@pytest.mark.usefixtures("nothing_reserved")
def test_before_brpop_heals_the_gate_when_celery_reserves_nothing() -> None:
    # given claims that were never released (a lost task_postrun) while Celery holds no reserved request
    gate = claimed(TaskType.COMMAND, TaskType.QUERY, TaskType.QUERY)

    # when the channel asks before its next BRPOP
    hidden = gate.before_brpop()

    # then the gate forgets them and every queue is listened to again
    assert hidden is False
    assert (gate.in_flight(TaskType.COMMAND), gate.in_flight(TaskType.QUERY)) == (0, 0)


def test_before_brpop_keeps_the_claims_while_celery_reserves_a_request(reserved: _Reserved) -> None:
    gate = claimed(TaskType.COMMAND, TaskType.QUERY)

    assert gate.before_brpop() is True

    assert len(worker_state.reserved_requests) == 1
    assert (gate.in_flight(TaskType.COMMAND), gate.in_flight(TaskType.QUERY)) == (1, 1)


def test_before_brpop_heals_once_the_last_reserved_request_is_gone() -> None:
    gate = claimed(TaskType.COMMAND)
    request = _Reserved()
    worker_state.reserved_requests.add(request)
    try:
        assert gate.before_brpop() is True
    finally:
        worker_state.reserved_requests.discard(request)

    assert gate.before_brpop() is False
    assert gate.in_flight(TaskType.COMMAND) == 0


def test_the_gate_step_refuses_a_channel_of_another_transport() -> None:
    # given a consumer whose task channel is kombu's in-memory transport, not scalablejob's Redis one
    with Connection("memory://") as connection:
        consumer = SimpleNamespace(task_consumer=SimpleNamespace(channel=connection.default_channel))
        step = GateStep(consumer, gate=make_gate())

        # then the worker does not start without idle-first dispatch
        with pytest.raises(RuntimeError, match=r"scalablejob's Redis transport .* got kombu\.transport\.memory"):
            step.start(consumer)


@pytest.mark.integration
def test_the_gate_step_gates_our_channel_and_keeps_its_unacked_messages(redis_url: str, reserved: _Reserved) -> None:
    # given a task channel of scalablejob's transport consuming the command queue, where a message waits
    acks = FinishAcks({}.get)
    app = SimpleNamespace(conf=SimpleNamespace(broker_url=redis_url), scalablejob_waker=None, scalablejob_acks=acks)
    with Connection(redis_url, transport=Transport) as connection:
        channel = connection.channel()
        queue = Queue(COMMAND_QUEUE, Exchange(COMMAND_QUEUE, type="direct"), routing_key=COMMAND_QUEUE)
        received: list[object] = []
        Consumer(channel, [queue], callbacks=[lambda body, message: received.append(body)]).consume()
        Producer(channel).publish("waiting", exchange=queue.exchange, routing_key=COMMAND_QUEUE, declare=[queue])

        # when the step starts with the command slot taken
        consumer = SimpleNamespace(task_consumer=SimpleNamespace(channel=channel), app=app)
        GateStep(consumer, gate=claimed(TaskType.COMMAND)).start(consumer)

        # then the message waits, and acks made after the connection drops will go straight to Redis
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=0.2)
        assert received == []
        assert channel.qos.direct_acks is not None
        assert acks.keys == (channel.qos.unacked_key, channel.qos.unacked_index_key)


def test_release_says_when_it_reopens_a_hidden_queue() -> None:
    gate = make_gate()  # 1 command slot, 2 query slots
    gate.claim("q1", TaskType.QUERY)
    gate.claim("q2", TaskType.QUERY)
    gate.claim("c1", TaskType.COMMAND)

    assert gate.release("q1") is True  # the query queue was hidden: it reopens
    assert gate.release("q2") is False  # it was open already
    assert gate.release("c1") is True
    assert gate.release("unknown") is False


@pytest.mark.integration
def test_the_gate_step_records_on_stop_the_messages_whose_tasks_have_not_started(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # given the worker's task channel, whose starts record the messages taken, and a message taken
    acks = FinishAcks({}.get, record_at_start={"request.task"})
    app = SimpleNamespace(conf=SimpleNamespace(broker_url=redis_url), scalablejob_waker=None, scalablejob_acks=acks)
    with Connection(redis_url, transport=Transport) as connection:
        channel = connection.channel()
        queue = Queue(COMMAND_QUEUE, Exchange(COMMAND_QUEUE, type="direct"), routing_key=COMMAND_QUEUE)
        consumer = SimpleNamespace(task_consumer=SimpleNamespace(channel=channel), app=app)
        step = GateStep(consumer, gate=make_gate())
        step.start(consumer)
        headers = {"task": "request.task"}
        Producer(channel).publish("taken", exchange=queue.exchange, routing_key=COMMAND_QUEUE, declare=[queue],
                                  headers=headers)  # fmt: skip
        message = channel.basic_get(COMMAND_QUEUE, no_ack=False)
        assert not redis_client.hexists("unacked", message.delivery_tag)

        # when the consumer stops before its task started
        step.stop(consumer)

        # then it is recorded as unacknowledged, for the scaler to put back if this worker does not run it
        assert redis_client.hexists("unacked", message.delivery_tag)
        assert redis_client.zscore("unacked_index", message.delivery_tag) is not None
