"""Chaos: the scaler killed -9 mid-burst and started again (issue 10): the new one adopts or recovers the workers,
and nothing acknowledged is lost."""

from __future__ import annotations

import pytest
from chaos_rig import Burst, query_body

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(180)]
pytest_plugins = ["chaos_fixtures"]


def test_scaler_kill_9_and_restart_mid_burst_loses_nothing(chaos):
    # given two workers running training jobs of 4 s, and a burst of queries coming in
    rig = chaos.rig("chaos-scaler", workers=2)
    first = rig.start_scaler(*chaos.UNBACKED_AFTER)
    chaos.ready(rig, 2)
    chaos.start_jobs(rig, ["job0", "job1"], 4)
    burst = Burst(rig.service, rig.url, rig.ledger, [(query_body(0.1), "query")] * 30, gap_s=0.05)
    burst.start()
    chaos.wait(lambda: burst.done >= 10, 20, "the burst never got going")

    # when the scaler is killed -9 and a new one is started with the same config
    first.kill()
    rig.start_scaler(*chaos.UNBACKED_AFTER)
    burst.join(60)

    # then the new scaler runs two workers, every acknowledged request ends once, and nothing is left
    chaos.ready(rig, 2, scaler_index=1)
    chaos.assert_delivered(rig)
    chaos.assert_clean_end(rig)
