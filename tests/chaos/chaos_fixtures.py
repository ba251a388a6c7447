"""Fixtures and checks of the chaos suite (issue 10): a rig per test (tests/chaos/chaos_rig.py) and the three things
every scenario ends with: every acknowledged request reached exactly one final entry and a final state; nothing
the test started is left running once the scaler has stopped; the scaler had every option the scenario asked for.

Load with `pytest_plugins = ["chaos_fixtures"]` and take the `chaos` fixture (a ChaosKit): loaded as a plugin, this
module's asserts are rewritten by pytest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos_rig import ChaosRig, Delivery, describe_processes, marked_processes, poll, settled

from conftest import service_config

FINAL_DEADLINE_S = 60.0  # generous: the normal path settles in a few seconds
READY_DEADLINE_S = 40.0
LEAK_DEADLINE_S = 20.0
# the scaler bounds issue 10 adds, short so that a test sees them act
STALE_AFTER = ("--stale-after", "4")
UNBACKED_AFTER = ("--unbacked-after", "3")
SYMPTOMS = ("Unrecoverable", "CRITICAL", "ERROR", "exited with code")


def chaos_config(name: str, *, workers: int, threads: int = 4) -> dict[str, Any]:
    """A service of exactly `workers` CPU workers (min = max: the fleet changes only by faults and replacements)."""
    config = service_config(name, instance=workers, **{"rpc.worker_threads": threads})
    config["autoscaler"] = {"min": workers, "max": workers, "strategies": {"avg_waiting_length": 4}}
    return config


class ChaosKit:
    """What a chaos test holds: the rigs it starts (all closed after it) and the checks every scenario ends with."""

    STALE_AFTER = STALE_AFTER
    UNBACKED_AFTER = UNBACKED_AFTER

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rigs: list[ChaosRig] = []

    def rig(self, name: str, *, workers: int) -> ChaosRig:
        """A fresh redis-server and, once `start_scaler` is called, a scaler of `workers` workers of service `name`."""
        self.rigs.append(ChaosRig(chaos_config(name, workers=workers), self.folder / f"rig{len(self.rigs)}"))
        return self.rigs[-1]

    def ready(self, rig: ChaosRig, count: int, scaler_index: int = 0) -> dict[str, str]:
        """The scaler's workers once it has `count` idle ones; the test fails if the scaler exits or they never do."""
        scaler = rig.scalers[scaler_index]
        try:
            workers = rig.idle_workers(scaler, count, READY_DEADLINE_S)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        if workers is None:
            pytest.fail(f"{count} idle worker(s) never showed up:\n{scaler.log()[-3000:]}")
        return workers

    def wait(self, condition: Callable[[], Any], deadline_s: float, message: Callable[[], str] | str) -> Any:
        """`poll` that fails the test (with `message`, called if it is one) when the deadline passes."""
        value = poll(condition, deadline_s)
        if not value:
            pytest.fail(f"timed out after {deadline_s} s: {message() if callable(message) else message}")
        return value

    def start_jobs(self, rig: ChaosRig, tokens: list[str], seconds: float, again_s: float | None = None) -> list[str]:
        """Put a training job per token (see chaos_rig.training_command) and wait until each has started."""
        ids = [rig.put_training(token, seconds, again_s) for token in tokens]
        assert None not in ids, f"a training job was refused: {rig.ledger.refused}"
        self.wait(lambda: all(rig.starts(token) for token in tokens), 20, f"the jobs {tokens} never started")
        return [rid for rid in ids if rid is not None]

    def assert_delivered(self, rig: ChaosRig, deadline_s: float = FINAL_DEADLINE_S) -> Delivery:
        """Every acknowledged request reaches exactly one final entry and a final state within `deadline_s`."""
        ids = list(rig.ledger.acknowledged)
        assert ids, "nothing was acknowledged: the scenario tried nothing"
        outcome, _ = settled(rig.raw, rig.service, ids, deadline_s)
        lost, twice = outcome.lost(), outcome.twice()
        symptoms = "\n".join(rig.worker_log_lines(*SYMPTOMS))
        assert not lost, (
            f"{len(lost)} of {len(ids)} acknowledged requests never reached a final entry and state in {deadline_s} s: "
            f"{outcome.describe(lost[:10])}\nworker logs:\n{symptoms}\nscaler log:\n{_scaler_tail(rig)}"
        )
        assert not twice, f"{len(twice)} requests got more than one final entry: {outcome.describe(twice[:10])}"
        return outcome

    def assert_clean_end(self, rig: ChaosRig) -> None:
        """Once the scalers have stopped, no process started under the rig's marker (worker, command) is alive; once
        Redis is stopped, no redis-server of the test serves its port; and the scenario ran with every scaler option
        it asked for (issue 10 adds them)."""
        rig.stop_scalers()
        left = poll(lambda: not marked_processes(rig.marker), LEAK_DEADLINE_S)
        assert left, f"processes outlived the scaler's stop:\n{describe_processes(marked_processes(rig.marker))}"
        rig.redis.stop()
        assert not rig.redis.processes(), f"a redis-server of the test still serves port {rig.redis.port}"
        assert not rig.missing_options, f"the scaler has no {', '.join(rig.missing_options)} option (issue 10)"

    def close(self) -> None:
        for rig in self.rigs:
            rig.close()


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[ChaosKit]:
    """A ChaosKit in tmp_path; afterwards nothing its rigs started is left running."""
    kit = ChaosKit(tmp_path)
    yield kit
    kit.close()


def _scaler_tail(rig: ChaosRig) -> str:
    return "\n".join(scaler.log()[-1500:] for scaler in rig.scalers)
