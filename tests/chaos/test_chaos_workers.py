"""Chaos: kill -9 of workers (issue 10), busy in the middle of a burst, or holding a message they have not recorded
yet: nothing acknowledged is lost or ends twice."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from chaos_rig import ChaosRig, poll, query_body

from scalablejob import RequestStatus
from scalablejob.model.routing import service_queues
from scalablejob.store.queues import queue_depth
from scalablejob.store.state import UnackedMessage

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


def test_a_worker_killed_after_taking_a_message_and_before_recording_it_loses_nothing(chaos):
    # given one idle worker, frozen (SIGSTOP) while its connection waits in BRPOP
    rig = chaos.rig("chaos-gap", workers=1)
    scaler = rig.start_scaler(*chaos.UNBACKED_AFTER)
    [name] = chaos.ready(rig, 1)
    pid = rig.presence()[name].pid

    # when a request is put: Redis pops its message into the frozen worker's socket, where no start records it as
    # unacknowledged (the gap between taking a message and recording it), and the worker is killed -9
    request_id = _put_while_frozen_in_brpop(rig, pid)
    os.kill(pid, signal.SIGKILL)

    # then the reconciler sends the message again, a new worker runs the request, and it ends once
    chaos.assert_delivered(rig)
    state = rig.client.state(request_id)
    assert state is not None and state.worker != name, state
    assert (state.status, state.retries, state.attempt) == (RequestStatus.DONE, 1, 2), state  # a re-send, one start
    assert f"request {request_id} was sent again: backed by no message" in scaler.log(), scaler.log()[-2000:]
    chaos.assert_clean_end(rig)


def _put_while_frozen_in_brpop(rig: ChaosRig, pid: int, attempts: int = 5) -> str:
    """Put a request while worker `pid` is stopped with its BRPOP waiting, so Redis hands the message to a process
    that cannot record it; the request's id once its message has left the queue and nothing records it. A stop that
    misses the BRPOP (its timeout ran out, or it was between two) is undone, and the request it put runs as usual:
    the next try waits until the worker is idle again."""
    worker = psutil.Process(pid)
    warm_up = rig.ledger.put(rig.client, query_body(0.0), "query")  # the client connected, the worker's path warm
    assert warm_up is not None, rig.ledger.refused
    for _ in range(attempts):
        assert poll(lambda: _idle(rig), 20.0), "the worker never went idle again"
        os.kill(pid, signal.SIGSTOP)
        assert poll(lambda: worker.status() == psutil.STATUS_STOPPED, 5.0), "the worker never stopped"
        if _waiting_in_brpop(rig, worker):
            request_id = rig.ledger.put(rig.client, query_body(0.1), "query")
            assert request_id is not None, rig.ledger.refused
            if poll(lambda: not _messages_queued(rig), 2.0):
                assert not rig.raw.hlen(UnackedMessage.unacked_key), "the stopped worker recorded a message"
                return request_id
        os.kill(pid, signal.SIGCONT)
    pytest.fail(f"the worker was never stopped while its BRPOP waited, in {attempts} tries")


def _waiting_in_brpop(rig: ChaosRig, worker: psutil.Process) -> bool:
    """Whether one of `worker`'s connections to Redis is blocked in BRPOP."""
    ends = {f"{c.laddr.ip}:{c.laddr.port}" for c in worker.net_connections(kind="tcp") if c.laddr}
    return any(
        client["addr"] in ends and client["cmd"] == "brpop" and "b" in client["flags"]
        for client in rig.raw.client_list()
    )


def _idle(rig: ChaosRig) -> bool:
    """Every request put so far has ended, and no message is queued or unacknowledged."""
    states = [rig.client.state(request_id) for request_id in rig.ledger.acknowledged]
    ended = all(state is not None and state.status.finished for state in states)
    return ended and not _messages_queued(rig) and not rig.raw.hlen(UnackedMessage.unacked_key)


def _messages_queued(rig: ChaosRig) -> int:
    return sum(queue_depth(rig.raw, queue) for queue in service_queues(rig.service))
