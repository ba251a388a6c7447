"""The tables of `scalablejob status`, from a snapshot: pure rendering, no Redis."""

from __future__ import annotations

from rich.console import Console

from scalablejob.cli.status import decisions_table, queues_table, scaler_table, workers_table
from scalablejob.store.presence import Presence, WorkerState
from scalablejob.store.status import ServiceStatus

NOW = 1_000_000.0


def rendered(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def snapshot(**changes) -> ServiceStatus:
    fields = {
        "service": "svc",
        "queues": {"svc.command": 3, "svc.query": 0},
        "scalers": [],
        "workers": [
            Presence("svc-a@h", 11, "h", WorkerState.BUSY, "GPU-0", {"r1": "tag"}, NOW - 1),
            Presence("svc-b@h", 12, "h", WorkerState.IDLE, "", {}, NOW - 60),
        ],
        "decisions": [{"at": NOW, "queued": 3, "running": 1, "replicas": 1, "desired": 2, "reason": "ceil(4 / 2) = 2"}],
        "init_failures": {"svc-c@h": {"exit_code": 9}},
        "taken_at": NOW,
    }
    return ServiceStatus(**{**fields, **changes})


def test_queues_show_their_depth():
    text = rendered(queues_table(snapshot()))
    assert "svc.command" in text and "3" in text


def test_no_scaler_is_said_plainly_and_a_report_shows_desired_and_actual():
    assert "(no scaler running)" in rendered(scaler_table(snapshot()))
    report = {"host": "h", "replicas": "1", "desired": "2", "busy": "1", "queued": "3", "running": "1",
              "reason": "ceil(4 / 2) = 2", "at": str(NOW - 2)}  # fmt: skip
    text = rendered(scaler_table(snapshot(scalers=[report])))
    assert "ceil(4 / 2) = 2" in text and "2 s ago" in text


def test_workers_show_state_gpu_tasks_staleness_and_init_failures():
    lines = rendered(workers_table(snapshot())).splitlines()
    busy = next(line for line in lines if "svc-a@h" in line)
    stale = next(line for line in lines if "svc-b@h" in line)
    failed = next(line for line in lines if "svc-c@h" in line)
    assert "busy" in busy and "GPU-0" in busy and " 1 " in busy
    assert "idle (stale)" in stale and "cpu" in stale
    assert "init failed (exit 9)" in failed


def test_decisions_show_their_inputs_and_reason():
    text = rendered(decisions_table(snapshot()))
    assert "ceil(4 / 2) = 2" in text and "desired" in text
