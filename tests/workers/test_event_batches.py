"""Task events go out in batches: however many are buffered, one flush is due within the batch time."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from scalablejob.workers.event_batches import EventBatches
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
