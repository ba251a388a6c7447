"""Chaos: a busy worker frozen (SIGSTOP) past the stale bound (issue 10) is killed with its job and replaced; its task
runs again elsewhere and ends with exactly one final entry."""

from __future__ import annotations

import os
import signal

import pytest
from chaos_rig import query_body

from scalablejob import RequestStatus
from scalablejob.local.scaler_process import is_gone

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(180)]
pytest_plugins = ["chaos_fixtures"]

FIRST_RUN_S, AGAIN_S = 12.0, 1.0  # the frozen run outlasts the stale bound; the run elsewhere is short
KILLED_WITHIN_S = 4 + 15  # the stale bound, plus heartbeats, passes and the kill


def test_a_worker_frozen_past_the_stale_bound_is_killed_and_replaced_and_its_task_ends_once(chaos):
    # given two workers, one of them running a training job (a long first run, a short second one)
    rig = chaos.rig("chaos-frozen", workers=2)
    scaler = rig.start_scaler(*chaos.STALE_AFTER, *chaos.UNBACKED_AFTER)
    chaos.ready(rig, 2)
    [request_id] = chaos.start_jobs(rig, ["frozen"], FIRST_RUN_S, AGAIN_S)
    [job] = rig.starts("frozen")
    [(name, presence)] = chaos.wait(lambda: rig.pick_busy(1, "command"), 10, "no worker runs the job").items()

    # when that worker is frozen (SIGSTOP) while queries keep coming
    os.kill(presence.pid, signal.SIGSTOP)
    for _ in range(10):
        rig.ledger.put(rig.client, query_body(0.1), "query")

    # then the scaler kills it (its job too) and replaces it
    gone = lambda: is_gone(presence.pid) and is_gone(job)  # noqa: E731
    never_killed = lambda: f"the frozen worker {name} was never killed:\n{scaler.log()[-2000:]}"  # noqa: E731
    chaos.wait(gone, KILLED_WITHIN_S, never_killed)
    replaced = lambda: len(scaler.workers()) == 2 and name not in scaler.workers()  # noqa: E731
    chaos.wait(replaced, 30, lambda: f"the frozen worker was not replaced:\n{scaler.log()[-2000:]}")

    # and its task runs again elsewhere and ends once, like every other acknowledged request
    chaos.assert_delivered(rig)
    state = rig.client.state(request_id)
    assert state is not None and (state.status, state.worker != name) == (RequestStatus.DONE, True)
    assert len(rig.starts("frozen")) == 2
    chaos.assert_clean_end(rig)
