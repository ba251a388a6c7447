"""A short task's slot frees without a gated BRPOP: the consumer holds back a BRPOP that would leave a queue out for
a moment (workers/wake.py), so a task that ends meanwhile costs Redis no second BRPOP and no CLIENT UNBLOCK
(issue 26; a real worker's counts are in test_task_round_trips.py); a task of the other type is still taken while
one runs."""

from __future__ import annotations

import select
import time
from typing import Any

import pytest

from conftest import python_command, service_config, wait_until
from scalablejob import RequestStatus
from scalablejob.workers.wake import HOLD_BACK_S, BrpopWaker


class FakeHub:
    """kombu's hub as the waker uses it: readers and timers, recorded."""

    def __init__(self) -> None:
        self.readers: dict[int, Any] = {}
        self.timers: list[float] = []

    def add_reader(self, fd: int, callback: Any) -> None:
        self.readers[fd] = callback

    def call_later(self, delay: float, callback: Any) -> None:
        self.timers.append(delay)


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_brpop_that_leaves_a_queue_out_is_held_back_until_a_slot_frees() -> None:
    waker, hub = BrpopWaker("redis://unused"), FakeHub()
    assert not waker.hold_back(True)  # no event loop attached: nothing is held back
    waker.attach(hub)
    ((fd, drain),) = hub.readers.items()

    assert not waker.hold_back(False)  # every queue heard: sent now
    assert waker.hold_back(True)  # a queue left out: held back, the loop to tick once the hold is over
    assert waker.hold_back(True)
    assert hub.timers == [HOLD_BACK_S]
    assert waker.pending is None  # no BRPOP went out: nothing to unblock

    waker.wake()  # a slot frees: the loop ticks through the pipe, without a command to Redis
    assert readable(fd)
    drain()
    assert not readable(fd)
    waker.wake()  # a second wake-up without a hold in between ticks nothing
    assert not readable(fd)


def test_the_hold_ends_after_its_time_and_starts_over_once_every_queue_is_heard() -> None:
    waker, hub = BrpopWaker("redis://unused"), FakeHub()
    waker.attach(hub)
    assert waker.hold_back(True)
    time.sleep(HOLD_BACK_S * 1.5)
    assert not waker.hold_back(True)  # over: the gated BRPOP goes out, as it did before the hold
    assert not waker.hold_back(True)
    assert not waker.hold_back(False)
    assert waker.hold_back(True)  # a new period
    assert hub.timers == [HOLD_BACK_S, HOLD_BACK_S]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_command_starts_while_a_long_query_runs(start_worker: Any, client_for: Any) -> None:
    # given a worker whose one query slot is taken by a query that runs until cancelled
    start_worker(service_config("holdbusy", **{"rpc.worker_threads": 1}))
    client = client_for("holdbusy")
    _, query_id = client.put(b'{"until_cancelled": true}', {"taskType": "query"})
    wait_until(lambda: client.state(query_id).status is RequestStatus.RUNNING, 30, "the query never started")

    # when a command arrives, it runs on the free command slot meanwhile (the held-back BRPOP went out)
    _, command_id = client.put(python_command("pass"), {"taskType": "command"})
    client.result(command_id, timeout=30)

    # then the query was still running
    assert client.state(query_id).status is RequestStatus.RUNNING
    client.cancel(query_id)
