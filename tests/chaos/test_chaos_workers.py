"""Chaos: kill -9 of busy workers in the middle of a burst (issue 10): nothing acknowledged is lost or ends twice."""

from __future__ import annotations

import os
import signal

import pytest
from chaos_rig import query_body

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(180)]
pytest_plugins = ["chaos_fixtures"]


def test_kill_9_of_two_busy_workers_mid_burst_loses_nothing(chaos):
    # given a fleet of three idle workers
    rig = chaos.rig("chaos-kill", workers=3)
    scaler = rig.start_scaler(*chaos.UNBACKED_AFTER)
    before = chaos.ready(rig, 3)

    # when a burst of 4 commands of 3 s and 30 queries of 0.3 s is put, and two busy workers are killed -9
    for n in range(4):
        rig.put_training(f"kill{n}", 3)
    for _ in range(30):
        rig.ledger.put(rig.client, query_body(0.3), "query")
    victims = chaos.wait(lambda: rig.pick_busy(2), 20, lambda: f"two workers were never busy: {rig.presence()}")
    for presence in victims.values():
        os.kill(presence.pid, signal.SIGKILL)

    # then every acknowledged request ends with exactly one final entry, the dead are replaced, nothing is left
    chaos.assert_delivered(rig)
    replaced = lambda: len(scaler.workers()) == 3 and not set(victims) & set(scaler.workers())  # noqa: E731
    chaos.wait(replaced, 30, lambda: f"the killed workers were not replaced:\n{scaler.log()[-2000:]}")
    assert set(before) - set(victims) <= set(scaler.workers())
    chaos.assert_clean_end(rig)
