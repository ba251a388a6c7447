"""Chaos on the broker (issue 10): Redis killed -9 and restarted mid-burst with training jobs running across the
outage; Redis out of memory during a burst. Nothing acknowledged is lost, a job across the outage runs once."""

from __future__ import annotations

import time

import pytest
from chaos_rig import Burst, query_body

from scalablejob.local.scaler_process import is_gone

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(180)]
pytest_plugins = ["chaos_fixtures"]

OUTAGE_S = 3.0  # how long Redis stays down: the fault itself, not a wait for anything
TRAINING_S = 8.0
MEMORY_HEADROOM = 128 * 1024  # maxmemory is set this far above what Redis uses when the fault starts
MEMORY_HOLD_S = 2.0  # how long Redis stays full once puts are refused


def test_redis_kill_9_and_restart_mid_burst_loses_nothing_and_jobs_run_once(chaos):
    # given three workers, two of them running a training job of 8 s
    rig = chaos.rig("chaos-redis", workers=3)
    scaler = rig.start_scaler(*chaos.UNBACKED_AFTER)
    chaos.ready(rig, 3)
    chaos.start_jobs(rig, ["train0", "train1"], TRAINING_S)
    workers = {name: presence.pid for name, presence in rig.presence().items()}

    # when a burst of queries is put, and Redis is killed -9 in its middle and restarted after 3 s on the same port
    burst = Burst(rig.service, rig.url, rig.ledger, [(query_body(0.2), "query")] * 40, gap_s=0.1)
    burst.start()
    chaos.wait(lambda: burst.done >= 10, 20, "the burst never got going")
    rig.redis.kill()
    time.sleep(OUTAGE_S)
    rig.redis.start()
    burst.join(60)

    # then every acknowledged request ends once, each job ran once to its end, and no worker died of the outage
    outcome = chaos.assert_delivered(rig)
    for request_id, token in rig.ledger.commands.items():
        assert len(rig.starts(token)) == 1, f"{token} was restarted: {rig.worker_log_lines('Unrecoverable')}"
        assert rig.client.result(request_id, timeout=1).tags.get("exitCode") == "0"
    died = [name for name, pid in workers.items() if is_gone(pid)]
    assert not died, f"workers died of the outage: {died}\n" + "\n".join(rig.worker_log_lines("Unrecoverable"))
    assert scaler.process.poll() is None, f"the scaler exited on the outage:\n{scaler.log()[-2000:]}"
    assert len(outcome.states) == len(rig.ledger.acknowledged)
    chaos.assert_clean_end(rig)


def test_redis_at_maxmemory_refuses_puts_and_loses_nothing_acknowledged(chaos):
    # given two idle workers
    rig = chaos.rig("chaos-memory", workers=2)
    rig.start_scaler(*chaos.UNBACKED_AFTER)
    chaos.ready(rig, 2)
    for n in range(2):
        rig.put_training(f"full{n}", 1)

    # when Redis' maxmemory is set just above its use (noeviction) while queries are put, until puts are refused
    used = int(rig.raw.info("memory")["used_memory"])
    rig.raw.config_set("maxmemory-policy", "noeviction")
    rig.raw.config_set("maxmemory", used + MEMORY_HEADROOM)
    for _ in range(1000):
        rig.ledger.put(rig.client, query_body(0.05), "query")
        if len(rig.ledger.refused) >= 5:
            break
    time.sleep(MEMORY_HOLD_S)  # the fault's length: workers meet a full Redis too
    rig.raw.config_set("maxmemory", 0)

    # then the refused puts raised, and every acknowledged request reaches exactly one final entry
    assert len(rig.ledger.refused) >= 5, "Redis never refused a put: the fault was not tried"
    assert any("OOM" in error or "memory" in error for error in rig.ledger.refused.values()), rig.ledger.refused
    chaos.assert_delivered(rig)
    chaos.assert_clean_end(rig)
