"""Celery's worker internals scalablejob relies on: the worker's reserved requests and stop flag, and the
consumer's task-event buffer. Each name is checked at import (upstream.check)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.utils.functional import maybe_list
from celery.utils.sysinfo import load_average
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from celery.worker.control import Panel
from celery.worker.request import Request

from scalablejob.upstream.check import require

require("celery", worker_state, ("reserved_requests", "active_requests", "total_count", "SOFTWARE_INFO",
                                 "should_stop"))  # fmt: skip
require("celery", Consumer, ("_flush_events",))
require("celery", Request, ("_announce_revoked",))
require("celery", Panel, ("data",))


def announce_terminated(request: Any, signum: Any) -> None:
    """Say a running task was terminated, as Celery's prefork pool does: REVOKED, with its task-revoked event."""
    request._announce_revoked("terminated", True, signals_signum(signum), False)


def signals_signum(signum: Any) -> Any:
    from celery.platforms import signals as platform_signals

    return platform_signals.signum(signum or "TERM")


def wrap_revoke(before: Callable[[list[str]], None]) -> None:
    """Call `before(task ids)` on each `revoke` and `terminate` control command this worker gets, then Celery's own
    (the panel is one per process: a worker process has one app)."""
    for name, ids_of in (("revoke", _revoke_ids), ("terminate", _terminate_ids)):
        original = Panel.data[name]
        if getattr(original, "scalablejob_wrapped", False):
            continue

        def wrapped(state: Any, *args: Any, _original: Any = original, _ids_of: Any = ids_of, **kwargs: Any) -> Any:
            before(_ids_of(args, kwargs))
            return _original(state, *args, **kwargs)

        wrapped.scalablejob_wrapped = True  # type: ignore[attr-defined]
        Panel.data[name] = wrapped


def _revoke_ids(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    return [str(one) for one in maybe_list(kwargs.get("task_id", args[0] if args else None)) or []]


def _terminate_ids(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    return [str(one) for one in maybe_list(kwargs.get("task_id", args[1] if len(args) > 1 else None)) or []]


def nothing_reserved() -> bool:
    """True when the worker holds no request at all (received, not yet finished)."""
    return len(worker_state.reserved_requests) == 0


def stop_worker(exit_code: int) -> None:
    """Ask the worker to stop, as Celery's own signal handlers do; its exit status is `exit_code`."""
    worker_state.should_stop = exit_code


def event_flush(consumer: Any) -> Callable[[], None]:
    """What sends the task events the consumer's dispatcher holds."""
    flush: Callable[[], None] = consumer._flush_events
    return flush


def hold_task_events(consumer: Any, buffer_limit: int, buffered: Callable[[], None]) -> None:
    """Let the consumer's event dispatcher hold up to `buffer_limit` events, calling `buffered` for each one it holds
    (instead of asking the event loop to flush at once)."""
    dispatcher = consumer.event_dispatcher
    require("celery", dispatcher, ("on_send_buffered", "buffer_limit"))
    dispatcher.buffer_limit = buffer_limit
    dispatcher.on_send_buffered = buffered


def offline_fields(heartbeat_s: float) -> dict[str, Any]:
    """The fields of Celery's own worker-offline event (celery.worker.heartbeat), so Flower's worker row stays whole."""
    return {
        "freq": heartbeat_s, "active": len(worker_state.active_requests),
        "processed": sum(worker_state.total_count.values()), "loadavg": load_average(), **worker_state.SOFTWARE_INFO,
    }  # fmt: skip
