"""From desired replicas to spawns and warm stops: idle workers go first, busy ones never."""

from __future__ import annotations

import pytest

from scalablejob.scaler.plan import Plan, WorkerView, plan
from scalablejob.store.presence import WorkerState

IDLE, BUSY, STARTING, STOPPING = WorkerState.IDLE, WorkerState.BUSY, WorkerState.STARTING, WorkerState.STOPPING


def views(*states: WorkerState) -> list[WorkerView]:
    """Workers w0, w1, ... started in that order (w0 oldest)."""
    return [WorkerView(f"w{i}", state, started_at=float(i)) for i, state in enumerate(states)]


@pytest.mark.parametrize(
    ("desired", "workers", "expected"),
    [
        (3, views(IDLE), Plan(spawn=2)),
        (2, views(IDLE, STOPPING), Plan(spawn=1)),  # a stopping worker does not count
        (1, views(IDLE, IDLE), Plan(stop=("w1",))),  # the newest idle one goes
        (0, views(IDLE, BUSY, IDLE), Plan(stop=("w2", "w0"))),
        (0, views(BUSY, IDLE), Plan(stop=("w1",))),  # never the busy one, even below what is wanted
        (2, views(STARTING, IDLE, BUSY), Plan(stop=("w1",))),  # idle before starting
        (0, views(STARTING, BUSY), Plan(stop=("w0",))),
        (2, views(BUSY, BUSY, BUSY), Plan()),
        (2, views(IDLE, BUSY), Plan()),
    ],
)
def test_plan(desired: int, workers: list[WorkerView], expected: Plan) -> None:
    assert plan(desired, workers) == expected
