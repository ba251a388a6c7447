"""Which tasks live workers hold and which workers count against max: pure, judged by silence seen (a parameter)."""

from __future__ import annotations

from scalablejob.scaler.liveness import holders, silent_holders, strays
from scalablejob.store.presence import Presence, WorkerState

WORKERS = {
    "svc-1@h1": Presence("svc-1@h1", 1, "h1", WorkerState.BUSY, "", {"a": "ta"}),
    "svc-2@h2": Presence("svc-2@h2", 2, "h2", WorkerState.BUSY, "", {"b": "tb"}),
    "svc-3@h2": Presence("svc-3@h2", 3, "h2", WorkerState.BUSY, "", {"c": "tc"}),
}
SILENT = {"svc-1@h1": 60.0, "svc-2@h2": 1.0, "svc-3@h2": 12.0}


def test_own_workers_and_workers_seen_changing_hold_their_tasks_whatever_their_host() -> None:
    found = holders(WORKERS, {"svc-1@h1"}, SILENT.__getitem__, 10.0, dead_hosts={"h2"})

    assert found.held == {"a", "b"}  # own (reaped when dead), and h2's live worker though h2 was declared dead
    why = "its host h2 was declared dead and its worker svc-3@h2 on host h2 fell silent for 12 s"
    assert found.orphaned == {"c": why}


def test_a_task_held_again_by_a_live_worker_is_not_orphaned() -> None:
    workers = {**WORKERS, "svc-4@h3": Presence("svc-4@h3", 4, "h3", WorkerState.BUSY, "", {"c": "tc2"})}
    found = holders(workers, (), {**SILENT, "svc-4@h3": 0.0}.__getitem__, 10.0)
    assert "c" in found.held and "c" not in found.orphaned
    assert found.orphaned["a"] == "its worker svc-1@h1 on host h1 fell silent for 60 s"


def test_strays_are_live_workers_of_hosts_without_a_live_scaler() -> None:
    found = strays(WORKERS, {"h1"}, (), lambda name: SILENT[name] < 10.0)
    assert [presence.name for presence in found] == ["svc-2@h2"]


def test_the_silent_holders_are_the_workers_whose_tasks_are_orphaned() -> None:
    idle = {"svc-4@h3": Presence("svc-4@h3", 4, "h3", WorkerState.IDLE, "", {})}
    workers = {**WORKERS, **idle}
    silent = {"svc-1@h1": 60.0, "svc-2@h2": 9.9, "svc-3@h2": 10.0, "svc-4@h3": 60.0}
    found = holders(workers, {"svc-1@h1"}, silent.__getitem__, 10.0)
    assert silent_holders(workers, {"svc-1@h1"}, silent.__getitem__, 10.0) == {"svc-3@h2"}  # not own, idle, or live
    assert set(found.orphaned) == {"c"}
