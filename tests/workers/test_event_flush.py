"""A warm-stopped worker sends its batched task events before it goes: Flower never keeps a finished task STARTED,
nor a stopped worker alive, whenever the stop comes (just after the task's end, or while it runs)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import states
from celery.events import EventReceiver
from celery.events.state import State

from conftest import WorkerProcess, service_config, wait_until
from scalablejob.api.celery_app import make_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WORKER_EXIT_S = 15.0


class Events:
    """Every event on the broker, in the order received, from a thread with Celery's own receiver (as Flower reads
    them); `state` is what Flower's state (Celery's State, which Flower's extends) makes of them."""

    def __init__(self, service: str, broker_url: str) -> None:
        self.received: list[dict[str, Any]] = []
        self._app = make_app(service, broker_url)
        self._receiver: EventReceiver | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture, name="events", daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        with self._app.connection_for_read() as connection:
            receiver = EventReceiver(connection, handlers={"*": self.received.append}, app=self._app)
            self._receiver = receiver
            receiver.should_stop = self._stop.is_set()  # close() before this line sets only the event
            with contextlib.suppress(OSError):  # the connection closed under it at the end
                for _ in receiver.consume(limit=None, safety_interval=0.1, wakeup=False):
                    pass

    def of(self, kind: str, **fields: str) -> list[dict[str, Any]]:
        return [e for e in list(self.received) if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())]

    def state(self) -> State:
        state = State()
        for event in list(self.received):
            state.event(event)
        return state

    def close(self) -> None:
        self._stop.set()
        if self._receiver is not None:
            self._receiver.should_stop = True  # seen within one safety interval
        self._thread.join(5)
        self._app.close()


@pytest.fixture
def events(redis_url: str) -> Iterator[Callable[[str], Events]]:
    made: list[Events] = []

    def start(service: str) -> Events:
        made.append(Events(service, redis_url))
        return made[-1]

    yield start
    for each in made:
        each.close()


def listening(events: Events, worker: WorkerProcess) -> None:
    """Wait for the worker's first heartbeat event: the receiver is subscribed, so no later event is missed."""
    wait_until(lambda: events.of("worker-heartbeat", hostname=worker.hostname), 10, "no worker heartbeat event seen")


def warm_stopped(worker: WorkerProcess) -> int:
    worker.process.terminate()  # SIGTERM: Celery's warm shutdown, as the scaler stops a worker
    return worker.process.wait(WORKER_EXIT_S)


def assert_flower_shows_it_ended(events: Events, worker: WorkerProcess, task_id: str) -> None:
    """The task's end arrived, and the worker's offline event came after every task event of it."""
    wait_until(lambda: events.of("worker-offline", hostname=worker.hostname), 5, "no worker-offline event seen")
    wait_until(lambda: events.of("task-succeeded", uuid=task_id), 2, f"task-succeeded never sent:\n{events.received}")
    state = events.state()
    assert state.tasks[task_id].state == states.SUCCESS
    last = max(i for i, e in enumerate(events.received) if e["hostname"] == worker.hostname)
    assert events.received[last]["type"] == "worker-offline", [e["type"] for e in events.received]
    assert not state.workers[worker.hostname].alive  # Flower's status column: offline


def started(service: str, sleep_s: float, start_worker, client_for, events) -> tuple[WorkerProcess, Events, Any, str]:
    """A worker running a query of `sleep_s`, its task-started event seen by a receiver already listening."""
    worker = start_worker(service_config(service))
    seen = events(service)
    listening(seen, worker)
    client = client_for(service)
    _, request_id = client.put(json.dumps({"sleep": sleep_s}), {"taskType": "query"})
    wait_until(lambda: seen.of("task-started", uuid=request_id), 10, "task-started never sent")
    return worker, seen, client, request_id


def test_a_task_that_ended_just_before_the_warm_stop_is_shown_ended(start_worker, client_for, events):
    # given a worker whose task-started event is out, and a receiver of the events
    worker, seen, client, request_id = started("flushidle", 0.3, start_worker, client_for, events)

    # when the scaler stops the worker as soon as its task has ended (well within one event batch)
    client.result(request_id, timeout=10)
    assert warm_stopped(worker) == 0

    # then the task is shown succeeded and the worker offline
    assert_flower_shows_it_ended(seen, worker, request_id)


def test_a_task_running_at_the_warm_stop_is_shown_ended(start_worker, client_for, events):
    # given a worker running a task, and a receiver of the events
    worker, seen, client, request_id = started("flushbusy", 1.0, start_worker, client_for, events)

    # when the worker is warm-stopped while the task runs: it ends the task, then exits
    assert warm_stopped(worker) == 0

    # then the task is shown succeeded and the worker offline
    assert client.result(request_id, timeout=5).is_final
    assert_flower_shows_it_ended(seen, worker, request_id)
