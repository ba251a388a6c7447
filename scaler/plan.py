"""From desired replicas to actions: how many workers to spawn, and which ones to stop. Pure.

Only idle workers are stopped, then workers still starting; a busy worker is never chosen. Among equals the
newest goes first, so the longest-lived workers (warm caches, loaded models) stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scalablejob.store.presence import WorkerState

_STOP_ORDER = (WorkerState.IDLE, WorkerState.STARTING)


@dataclass(frozen=True)
class WorkerView:
    """One of the scaler's workers as the loop sees it in one pass."""

    name: str
    state: WorkerState
    started_at: float


@dataclass(frozen=True)
class Plan:
    spawn: int = 0
    stop: tuple[str, ...] = ()


def plan(desired: int, workers: Sequence[WorkerView]) -> Plan:
    """The spawns or warm stops that bring the workers that are not stopping to `desired`."""
    active = [worker for worker in workers if worker.state is not WorkerState.STOPPING]
    if desired >= len(active):
        return Plan(spawn=desired - len(active))
    candidates = [
        worker
        for state in _STOP_ORDER
        for worker in sorted(active, key=lambda w: w.started_at, reverse=True)
        if worker.state is state
    ]
    return Plan(stop=tuple(worker.name for worker in candidates[: len(active) - desired]))
