"""Which `celery worker` options a scalablejob worker takes, which it refuses (they would break the service), and
what it sets itself. Pure: `options` are the worker command's keyword arguments, `given` the ones the user set."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

THREADS_POOL = "threads"
_POOL_NAMES = {  # Celery's pool classes by their import path, as `-P` names them
    "celery.concurrency.thread:TaskPool": "threads",
    "celery.concurrency.prefork:TaskPool": "prefork",
    "celery.concurrency.solo:TaskPool": "solo",
    "celery.concurrency.eventlet:TaskPool": "eventlet",
    "celery.concurrency.gevent:TaskPool": "gevent",
    "celery.concurrency.custom:TaskPool": "custom",
}


@dataclass(frozen=True)
class ServiceShape:
    """What the service config fixes for each of its workers."""

    queues: tuple[str, ...]  # its command and query queues, both consumed
    slots: int  # threads: rpc.worker_threads query slots + 1 command slot
    query_slots: int


def pool_name(value: Any) -> str | None:
    """`-P`'s value as its name, whether Celery gave the name or already the class."""
    if value is None or isinstance(value, str):
        return value
    return _POOL_NAMES.get(f"{getattr(value, '__module__', '')}:{getattr(value, '__name__', '')}", repr(value))


def _queues(value: Any, shape: ServiceShape) -> str | None:
    if value and set(value) != set(shape.queues):
        return (
            f"-Q/--queues {','.join(value)}: a scalablejob worker consumes exactly its service's queues "
            f"({','.join(shape.queues)}), so that the gate and the scaler see all of its work; drop -Q"
        )
    return None


def _exclude_queues(value: Any, shape: ServiceShape) -> str | None:
    if value:
        return f"-X/--exclude-queues {','.join(value)}: a worker consumes both of its service's queues; drop -X"
    return None


def _autoscale(value: Any, shape: ServiceShape) -> str | None:
    if value:
        return (
            "--autoscale: Celery's autoscale resizes one worker's pool and can kill busy tasks (celery #2682); the "
            "scaler starts and stops whole workers from the config's autoscaler section; drop --autoscale"
        )
    return None


def _prefetch(value: Any, shape: ServiceShape) -> str | None:
    if value not in (None, 1):
        return f"--prefetch-multiplier {value}: idle first needs 1 (a busy worker holds no reserved task); drop it"
    return None


def _disable_prefetch(value: Any, shape: ServiceShape) -> str | None:
    if value:
        return "--disable-prefetch: the idle-first gate already fetches a task only for a free slot; drop it"
    return None


def _pool(value: Any, shape: ServiceShape) -> str | None:
    name = pool_name(value)
    if name not in (None, THREADS_POOL):
        return (
            f"-P/--pool {name}: a scalablejob worker runs the threads pool (a thread per slot; training tasks and "
            f"commands run in processes of their own); drop -P or give -P threads"
        )
    return None


def _concurrency(value: Any, shape: ServiceShape) -> str | None:
    if value not in (None, 0, shape.slots):
        return (
            f"-c/--concurrency {value}: this service's workers have {shape.slots} slots ({shape.query_slots} query "
            f"slots from metadata.rpc.worker_threads + 1 command slot); change rpc.worker_threads in the config"
        )
    return None


def _purge(value: Any, shape: ServiceShape) -> str | None:
    if value:
        return "--purge: it would drop queued messages and leave their requests queued forever; use scalablejob cancel"
    return None


def _time_limit(flag: str) -> Callable[[Any, ServiceShape], str | None]:
    def check(value: Any, shape: ServiceShape) -> str | None:
        if value:
            return (
                f"{flag} {value}: a scalablejob worker does not apply a worker-wide time limit (its threads pool "
                f"would ignore it); give the tasks time_limit/soft_time_limit, or set task_time_limit/"
                f"task_soft_time_limit in the app's config"
            )
        return None

    return check


_CHECKS: dict[str, Callable[[Any, ServiceShape], str | None]] = {
    "queues": _queues, "exclude_queues": _exclude_queues, "autoscale": _autoscale, "prefetch_multiplier": _prefetch,
    "disable_prefetch": _disable_prefetch, "pool": _pool, "concurrency": _concurrency, "purge": _purge,
    "time_limit": _time_limit("--time-limit"), "soft_time_limit": _time_limit("--soft-time-limit"),
}  # fmt: skip


def refusal(options: Mapping[str, Any], given: Collection[str], shape: ServiceShape) -> str | None:
    """Why the worker cannot run with these options (the first reason, one line), or None."""
    for name, check in _CHECKS.items():
        if name in given and (reason := check(options.get(name), shape)) is not None:
            return reason
    return None


def service_options(given: Collection[str], shape: ServiceShape, threads_pool: Any) -> dict[str, Any]:
    """The options a scalablejob worker runs with, over what Celery would default to: both queues, the threads pool
    with a thread per slot, prefetch 1, and no mingle or gossip (they slow the start; state lives in Redis)."""
    options: dict[str, Any] = {
        "queues": list(shape.queues), "pool": threads_pool, "pool_cls": None, "concurrency": shape.slots,
        "prefetch_multiplier": 1,
    }  # fmt: skip
    options.update({flag: True for flag in ("without_mingle", "without_gossip") if flag not in given})
    return options


def given_options(options: Mapping[str, Any], sources: Mapping[str, bool] | None) -> set[str]:
    """The options the user set: from the command line's parameter sources when there is one (Celery fills the
    others with defaults), else those given a value."""
    if sources is not None:
        return {name for name, from_user in sources.items() if from_user}
    return {name for name, value in options.items() if value not in (None, False)}


def shape_of(queues: Sequence[str], query_slots: int) -> ServiceShape:
    return ServiceShape(tuple(queues), query_slots + 1, query_slots)
