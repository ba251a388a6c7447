"""A stopping scaler whose broker refuses the bookkeeping of its ended workers (a full disk: MISCONF) stops anyway,
after a bound, instead of retrying forever and holding `up` with it. Fakes: fakeredis, a FakeLauncher, a FakeRecovery
whose broker is down, and a clock that moves one second per reading."""

from __future__ import annotations

import itertools

import fakeredis
import pytest

from scalablejob.host.gpus import fake_gpus
from scalablejob.scaler.loop import LEFTOVER_BOOKKEEPING_S, Fleet, Parts, Scaler
from scalablejob.scaler.metrics import RedisMetrics
from scalablejob.scaler.policy import Policy
from scalablejob.scaler.records import ScalerStore
from scalablejob.scaler.testing import FAKE_HOST, FakeLauncher, FakeRecovery
from scalablejob.scaler.wakeup import Wakeup

SERVICE = "svc"
T0 = 1000.0


@pytest.mark.timeout(20)
def test_a_stopping_scaler_gives_up_bookkeeping_the_broker_refuses_once_no_worker_runs() -> None:
    client = fakeredis.FakeRedis()
    launcher, recovery = FakeLauncher(), FakeRecovery(broker_down=True)
    parts = Parts(RedisMetrics(client, SERVICE), launcher, recovery, ScalerStore(client, SERVICE, FAKE_HOST), None)
    policy = Policy(min=1, max=1, avg_waiting_length=2, scale_down_window_s=2)  # type: ignore[arg-type]
    scaler = Scaler(Fleet(SERVICE, FAKE_HOST, fake_gpus(0), 0, 1), policy, parts)
    readings = itertools.count(T0)

    # given a scaler asked twice to stop (its workers are killed at once), whose broker refuses every write
    with Wakeup() as wakeup:
        wakeup.stop_requests = 2
        scaler.run(wakeup, clock=lambda: float(next(readings)), interval_s=0)

    # then it returned: its worker was killed and reaped, and its bookkeeping given up after the bound
    assert launcher.killed and not launcher.alive and recovery.recovered == []
    assert next(readings) - T0 >= LEFTOVER_BOOKKEEPING_S
