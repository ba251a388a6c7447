"""Task events go out in batches: however many are buffered, one flush is due within the batch time; and when the
consumer stops, what is buffered goes out at once, in order with the worker's offline event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from scalablejob.workers.event_batches import EventBatches, EventBatchStep
from scalablejob.workers.service import PER_TASK_LOGGERS, quiet_per_task_lines


class FakeHub:
    """kombu's hub as the batcher uses it: call_soon runs on the next loop turn, call_later when its time comes."""

    def __init__(self) -> None:
        self.soon: list[Callable[[], None]] = []
        self.later: list[tuple[float, Callable[[], None]]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.soon.append(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.later.append((delay, callback))

    def turn(self) -> None:
        soon, self.soon = self.soon, []
        for callback in soon:
            callback()

    def fire(self) -> None:
        later, self.later = self.later, []
        for _, callback in later:
            callback()


def test_many_events_make_one_flush_after_the_batch_time() -> None:
    hub, flushes = FakeHub(), []
    batches = EventBatches(hub, lambda: flushes.append("flush"), batch_s=0.1)

    for _ in range(50):
        batches.buffered()
    hub.turn()

    assert [delay for delay, _ in hub.later] == [0.1] and flushes == []
    hub.fire()
    assert flushes == ["flush"]


def test_an_event_after_a_flush_schedules_the_next_one() -> None:
    hub, flushes = FakeHub(), []
    batches = EventBatches(hub, lambda: flushes.append("flush"), batch_s=0.1)
    batches.buffered()
    hub.turn()
    hub.fire()

    batches.buffered()
    hub.turn()
    hub.fire()

    assert flushes == ["flush", "flush"]


def test_flush_now_sends_what_is_buffered_at_once_and_says_whether_there_was_any() -> None:
    hub, flushes = FakeHub(), []
    batches = EventBatches(hub, lambda: flushes.append("flush"), batch_s=0.1)
    assert batches.flush_now() is False and flushes == []

    batches.buffered()
    assert batches.flush_now() is True and flushes == ["flush"]
    assert batches.flush_now() is False and flushes == ["flush"]


class FakeDispatcher:
    """Celery's event dispatcher as the step uses it; what it sends and flushes goes into one ordered list."""

    def __init__(self, sent: list[str]) -> None:
        self.sent = sent
        self.buffer_limit = 24
        self.on_send_buffered: Callable[[], None] | None = None

    def send(self, type: str, **fields: Any) -> None:  # Celery's own name
        self.sent.append(type)


def started_step(sent: list[str]) -> tuple[EventBatchStep, Any]:
    """The step started on a fake consumer (hub, dispatcher, heart); a flush of the batch is recorded as "batch"."""
    dispatcher = FakeDispatcher(sent)
    parent = SimpleNamespace(
        event_dispatcher=dispatcher, hub=FakeHub(), heart=SimpleNamespace(interval=2.0),
        _flush_events=lambda: sent.append("batch"),
    )  # fmt: skip
    step = EventBatchStep(parent)
    step.start(parent)
    return step, parent


def test_stopping_the_consumer_sends_the_buffered_task_events_before_celery_says_the_worker_is_offline() -> None:
    sent: list[str] = []
    step, parent = started_step(sent)
    parent.event_dispatcher.on_send_buffered()  # a task ended a moment before the stop

    step.stop(parent)  # Celery's Heart stops after this step (it sends worker-offline)
    parent.event_dispatcher.send("worker-offline")
    step.shutdown(parent)

    assert sent == ["batch", "worker-offline"]  # nothing more: no task ended after the offline event


def test_tasks_that_end_during_the_warm_shutdown_go_out_then_the_worker_is_offline_again() -> None:
    sent: list[str] = []
    step, parent = started_step(sent)
    step.stop(parent)
    parent.event_dispatcher.send("worker-offline")

    parent.event_dispatcher.on_send_buffered()  # a task the warm shutdown waited for ends
    step.shutdown(parent)

    assert sent == ["worker-offline", "batch", "worker-offline"]


def test_without_an_event_loop_the_step_leaves_celery_sending_each_event() -> None:
    sent: list[str] = []
    parent = SimpleNamespace(event_dispatcher=FakeDispatcher(sent), hub=None, heart=None, _flush_events=None)
    step = EventBatchStep(parent)
    step.start(parent)
    step.stop(parent)
    step.shutdown(parent)
    assert parent.event_dispatcher.on_send_buffered is None and sent == []


@pytest.fixture
def per_task_levels():
    loggers = [logging.getLogger(name) for name in PER_TASK_LOGGERS]
    levels = [logger.level for logger in loggers]
    yield loggers
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.parametrize(("loglevel", "quiet"), [("INFO", True), (logging.WARNING, True), ("DEBUG", False)])
def test_celerys_per_task_lines_are_left_out_below_debug(per_task_levels, loglevel: str | int, quiet: bool) -> None:
    for logger in per_task_levels:
        logger.setLevel(logging.NOTSET)
    quiet_per_task_lines(loglevel)
    assert [logger.level == logging.WARNING for logger in per_task_levels] == [quiet] * len(PER_TASK_LOGGERS)
