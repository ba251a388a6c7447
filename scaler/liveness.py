"""Which workers hold their tasks and which count against max, judged by what this scaler sees change. Pure.

A worker whose presence record this scaler has seen change within the bound is alive and holds its tasks, whatever
its host's record says: its host may have been declared dead because its scaler died while the worker lives on
(DESIGN "Delivery guarantees"). Only a worker seen silent for the bound, or gone, leaves its tasks orphaned. Live
workers of hosts with no live scaler are strays: they take no new task after a bound (workers/scaler_watch.py),
and until they leave the leader counts them, so that the service stays within max.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from scalablejob.store.presence import Presence


@dataclass(frozen=True)
class Holders:
    """The tasks live workers hold, and each orphaned task with why it is orphaned."""

    held: frozenset[str]
    orphaned: Mapping[str, str]


def holders(
    workers: Mapping[str, Presence], own: Collection[str], silent_s: Callable[[str], float], bound_s: float,
    dead_hosts: Collection[str] = (),
) -> Holders:  # fmt: skip
    """Our own workers hold theirs until they are reaped; another host's worker holds its tasks while it was seen
    changing within `bound_s` (`silent_s(name)`: how long it has not)."""
    held: set[str] = set()
    orphaned: dict[str, str] = {}
    for name, presence in workers.items():
        silent = silent_s(name)
        if name in own or silent < bound_s:
            held.update(presence.held)
            continue
        why = f"its worker {name} on host {presence.scaler_host} fell silent for {silent:.0f} s"
        if presence.scaler_host in dead_hosts:
            why = f"its host {presence.scaler_host} was declared dead and {why}"
        orphaned.update(dict.fromkeys(presence.held, why))
    return Holders(frozenset(held), {task: why for task, why in orphaned.items() if task not in held})


def silent_holders(
    workers: Mapping[str, Presence], own: Collection[str], silent_s: Callable[[str], float], bound_s: float
) -> frozenset[str]:
    """The workers that `holders` judges lost: another host's, holding tasks, silent for the bound. A pass that finds
    one not found at the last reconcile reconciles at once (scaler.loop)."""
    return frozenset(
        name for name, presence in workers.items() if presence.held and name not in own and silent_s(name) >= bound_s
    )


def strays(
    workers: Mapping[str, Presence], live_hosts: Collection[str], own: Collection[str], is_fresh: Callable[[str], bool]
) -> list[Presence]:
    """Live workers (seen changing) of hosts that have no live scaler: they still hold a slot of max."""
    return [
        presence
        for name, presence in workers.items()
        if name not in own and presence.scaler_host not in live_hosts and is_fresh(name)
    ]
