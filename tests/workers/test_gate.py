"""Idle first: the slot gate counts tasks in flight per type and hides the queues of full types from BRPOP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery.worker import state as worker_state

from scalablejob.model.routing import TaskType
from scalablejob.workers.gate import GATED_BRPOP_TIMEOUT_S, SlotGate, _GatedCycle, gate_channel

COMMAND_QUEUE = "svc.command"
QUERY_QUEUE = "svc.query"
FOREIGN_QUEUE = "celery"
ALL_QUEUES = [COMMAND_QUEUE, QUERY_QUEUE, FOREIGN_QUEUE]


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


class FakeCycle:
    """kombu's round-robin queue cycle, reduced to what the gate uses."""

    def __init__(self, queues: list[str]) -> None:
        self.queues = queues
        self.rotated: list[str] = []

    def consume(self, n: int) -> list[str]:
        return self.queues[:n]

    def rotate(self, last_used: str) -> None:
        self.rotated.append(last_used)


class FakeChannel:
    """A kombu Redis channel whose `_brpop_start` records the queues it would BRPOP on."""

    def __init__(self, queues: list[str], error: Exception | None = None) -> None:
        self._queue_cycle = FakeCycle(queues)
        self.active_queues = list(queues)
        self.brpops: list[list[str]] = []
        self.timeouts: list[float | None] = []
        self.error = error
        self._in_poll: object = None

    def _brpop_read(self, **options: object) -> bool:
        self._in_poll = None
        return True

    def _brpop_start(self, timeout: float | None = None) -> None:
        self.timeouts.append(timeout)
        self.brpops.append(self._queue_cycle.consume(len(self.active_queues)))
        if self.error is not None:
            raise self.error


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


# ---- _GatedCycle ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "visible"),
    [
        ((), ALL_QUEUES),
        ((TaskType.COMMAND,), [QUERY_QUEUE, FOREIGN_QUEUE]),
        ((TaskType.QUERY, TaskType.QUERY), [COMMAND_QUEUE, FOREIGN_QUEUE]),
        ((TaskType.COMMAND, TaskType.QUERY, TaskType.QUERY), [FOREIGN_QUEUE]),
    ],
)
def test_gated_cycle_consume_hides_the_queues_without_room(claims: tuple[TaskType, ...], visible: list[str]) -> None:
    assert _GatedCycle(FakeCycle(ALL_QUEUES), claimed(*claims)).consume(3) == visible


def test_gated_cycle_consume_filters_only_what_the_cycle_gives() -> None:
    assert _GatedCycle(FakeCycle(ALL_QUEUES), claimed(TaskType.COMMAND)).consume(2) == [QUERY_QUEUE]


def test_gated_cycle_passes_other_attributes_to_the_cycle() -> None:
    cycle = FakeCycle(ALL_QUEUES)
    gated = _GatedCycle(cycle, make_gate())

    gated.rotate(QUERY_QUEUE)

    assert cycle.rotated == [QUERY_QUEUE]
    assert gated.queues is cycle.queues


# ---- gate_channel --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("reserved")
@pytest.mark.parametrize(
    ("claims", "visible"),
    [
        ((), ALL_QUEUES),
        ((TaskType.COMMAND,), [QUERY_QUEUE, FOREIGN_QUEUE]),
        ((TaskType.COMMAND, TaskType.QUERY), [QUERY_QUEUE, FOREIGN_QUEUE]),
        ((TaskType.COMMAND, TaskType.QUERY, TaskType.QUERY), [FOREIGN_QUEUE]),
    ],
)
def test_gate_channel_brpops_only_on_queues_with_room(claims: tuple[TaskType, ...], visible: list[str]) -> None:
    channel = FakeChannel(ALL_QUEUES)
    original_cycle = channel._queue_cycle
    gate_channel(channel, claimed(*claims))

    channel._brpop_start(2.5)

    assert channel.brpops == [visible]
    assert channel.timeouts == [2.5 if not claims else GATED_BRPOP_TIMEOUT_S]  # short while a queue is hidden
    assert channel._queue_cycle is original_cycle


@pytest.mark.usefixtures("reserved")
def test_gate_channel_follows_claims_and_releases_between_brpops() -> None:
    channel = FakeChannel(ALL_QUEUES)
    gate = make_gate()
    gate_channel(channel, gate)

    channel._brpop_start()
    gate.claim("c1", TaskType.COMMAND)
    channel._brpop_start()
    gate.release("c1")
    channel._brpop_start()

    assert channel.brpops == [ALL_QUEUES, [QUERY_QUEUE, FOREIGN_QUEUE], ALL_QUEUES]
    assert channel.timeouts == [None, GATED_BRPOP_TIMEOUT_S, None]


@pytest.mark.usefixtures("reserved")
def test_gate_channel_restores_the_cycle_when_the_brpop_raises() -> None:
    channel = FakeChannel(ALL_QUEUES, error=ConnectionError("redis went away"))
    original_cycle = channel._queue_cycle
    gate_channel(channel, claimed(TaskType.COMMAND))

    with pytest.raises(ConnectionError, match="redis went away"):
        channel._brpop_start()

    assert channel._queue_cycle is original_cycle
    assert channel.brpops == [[QUERY_QUEUE, FOREIGN_QUEUE]]


@pytest.mark.usefixtures("reserved")
def test_gate_channel_wraps_a_channel_only_once() -> None:
    channel = FakeChannel(ALL_QUEUES)
    gate_channel(channel, claimed(TaskType.COMMAND))
    wrapped = channel._brpop_start

    gate_channel(channel, make_gate())  # e.g. the consumer reconnects and the bootstep runs again

    assert channel._brpop_start is wrapped
    channel._brpop_start()
    assert channel.brpops == [[QUERY_QUEUE, FOREIGN_QUEUE]]


@pytest.mark.usefixtures("nothing_reserved")
def test_gate_channel_resets_the_gate_when_celery_reserves_nothing() -> None:
    # given claims that were never released (a lost task_postrun) while Celery holds no reserved request
    channel = FakeChannel(ALL_QUEUES)
    gate = claimed(TaskType.COMMAND, TaskType.QUERY, TaskType.QUERY)
    gate_channel(channel, gate)

    # when the consumer issues its next BRPOP
    channel._brpop_start()

    # then the gate heals itself and every queue is listened to again
    assert (gate.in_flight(TaskType.COMMAND), gate.in_flight(TaskType.QUERY)) == (0, 0)
    assert channel.brpops == [ALL_QUEUES]


def test_gate_channel_keeps_the_claims_while_celery_reserves_a_request(reserved: _Reserved) -> None:
    channel = FakeChannel(ALL_QUEUES)
    gate = claimed(TaskType.COMMAND, TaskType.QUERY)
    gate_channel(channel, gate)

    channel._brpop_start()

    assert len(worker_state.reserved_requests) == 1
    assert (gate.in_flight(TaskType.COMMAND), gate.in_flight(TaskType.QUERY)) == (1, 1)
    assert channel.brpops == [[QUERY_QUEUE, FOREIGN_QUEUE]]


def test_gate_channel_resets_once_the_last_reserved_request_is_gone() -> None:
    channel = FakeChannel(ALL_QUEUES)
    gate = claimed(TaskType.COMMAND)
    gate_channel(channel, gate)
    request = _Reserved()
    worker_state.reserved_requests.add(request)
    try:
        channel._brpop_start()
    finally:
        worker_state.reserved_requests.discard(request)

    channel._brpop_start()

    assert channel.brpops == [[QUERY_QUEUE, FOREIGN_QUEUE], ALL_QUEUES]
    assert gate.in_flight(TaskType.COMMAND) == 0


def test_release_says_when_it_reopens_a_hidden_queue() -> None:
    gate = make_gate()  # 1 command slot, 2 query slots
    gate.claim("q1", TaskType.QUERY)
    gate.claim("q2", TaskType.QUERY)
    gate.claim("c1", TaskType.COMMAND)

    assert gate.release("q1") is True  # the query queue was hidden: it reopens
    assert gate.release("q2") is False  # it was open already
    assert gate.release("c1") is True
    assert gate.release("unknown") is False
