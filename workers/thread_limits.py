"""Celery's time limits for a task that runs in a worker thread (a query task): at the soft limit the thread gets
SoftTimeLimitExceeded, at the hard one an exception that `except Exception` cannot catch, which leaves the task as
TimeLimitExceeded; each raised in it as an asynchronous exception (CPython's PyThreadState_SetAsyncExc), since a
thread cannot be killed. It interrupts Python code; a call blocked in C (a sleep, a socket read) sees it once that
call returns. A limit that fires as the task ends is withdrawn, never raised later in the worker's own code.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded


class _HardLimit(BaseException):
    """The hard limit inside the task: not an Exception, so that the task's `except Exception` cannot swallow it (a
    process killed at its hard limit cannot either); it leaves the block as TimeLimitExceeded."""


@contextmanager
def thread_time_limits(soft: float | None, hard: float | None) -> Iterator[None]:
    """Raise the limits' exceptions in this thread while the block runs."""
    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire(exception: type[BaseException]) -> None:
        with lock:
            if state["done"]:
                return
            state["fired"] = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception))

    timers = [threading.Timer(limit, fire, (exception,)) for limit, exception in
              ((soft, SoftTimeLimitExceeded), (hard, _HardLimit)) if limit]  # fmt: skip
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        yield
    except _HardLimit:
        raise TimeLimitExceeded(hard) from None  # as Celery's pool says it: the limit, in seconds
    finally:
        while not state["done"]:  # inline, no call: a limit that lands here, as the block ends, may not skip it
            try:
                with lock:
                    state["done"] = True
                    if state["fired"]:  # raised too late to land in the task: withdrawn
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
            except (SoftTimeLimitExceeded, _HardLimit):
                continue  # it landed as the task ended: the task's own outcome stands
        for timer in timers:
            timer.cancel()
