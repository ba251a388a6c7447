"""The scaler's records in Redis: process identity by pid and start time, and one scaler per service and host."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fakeredis
import psutil
import pytest

from scalablejob.host.processes import is_same_process
from scalablejob.model import keys
from scalablejob.model.errors import ScalerError
from scalablejob.scaler.records import LeaseLost, ProcessRecord, ScalerStore


def test_a_record_survives_the_round_trip() -> None:
    record = ProcessRecord("svc-1@h", 42, 1234.5, "h", ("GPU-a", "GPU-b"), 99.0)
    assert ProcessRecord.decode(record.encode()) == record


def test_a_process_is_the_same_only_with_the_same_start_time() -> None:
    me = psutil.Process()
    assert is_same_process(me.pid, me.create_time())
    assert not is_same_process(me.pid, me.create_time() - 1)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not is_same_process(int(done.stdout), me.create_time())


def test_a_lease_left_by_a_dead_scaler_is_taken_over() -> None:
    client = fakeredis.FakeRedis()
    dead = {"pid": os.getpid(), "create_time": psutil.Process().create_time() - 50}  # our pid, an earlier process
    client.set(keys.scaler_lease("svc", "h"), json.dumps(dead))
    store = ScalerStore(client, "svc", "h")

    store.acquire_lease()
    with pytest.raises(ScalerError, match="expected one scaler per service and host"):
        ScalerStore(client, "svc", "h").acquire_lease()
    ScalerStore(client, "svc", "other-host").acquire_lease()  # another host has its own
    store.release()
    ScalerStore(client, "svc", "h").acquire_lease()


def test_a_scaler_that_lost_its_lease_is_told_and_cannot_renew_it() -> None:
    # given a scaler whose lease expired while it was paused, and that another scaler then took over
    client = fakeredis.FakeRedis()
    paused = ScalerStore(client, "svc", "h")
    paused.acquire_lease()
    paused.renew_lease()
    client.set(keys.scaler_lease("svc", "h"), json.dumps({"pid": 1, "create_time": 0.0}))  # the other one's

    # when it wakes up and renews, then it learns it lost, and the other one keeps the lease
    with pytest.raises(LeaseLost, match=r"lost its lease .* another scaler took it"):
        paused.renew_lease()
    assert json.loads(client.get(keys.scaler_lease("svc", "h")))["pid"] == 1
    paused.release()  # nor does stopping remove the other one's lease
    assert client.exists(keys.scaler_lease("svc", "h"))


def test_a_lease_that_vanished_with_nobody_holding_it_is_taken_again() -> None:
    # given a scaler whose lease key is gone: it expired while Redis was away, or a failover promoted a replica
    # that never got the last renewals (seen in the Sentinel failover test: every scaler exited and restarted)
    client = fakeredis.FakeRedis()
    store = ScalerStore(client, "svc", "h")
    store.acquire_lease()
    assert store.renew_lease() is False  # an ordinary renewal
    client.delete(keys.scaler_lease("svc", "h"))

    # when it renews, then it holds the lease again and says so, once
    assert store.renew_lease() is True
    assert json.loads(client.get(keys.scaler_lease("svc", "h")))["pid"] == os.getpid()
    assert client.pttl(keys.scaler_lease("svc", "h")) > 0
    assert store.renew_lease() is False
    with pytest.raises(ScalerError, match="expected one scaler per service and host"):
        ScalerStore(client, "svc", "h").acquire_lease()  # and it is ours alone again


def test_of_two_scalers_that_find_the_same_dead_holder_only_one_takes_the_lease() -> None:
    client = fakeredis.FakeRedis()
    dead = json.dumps({"pid": os.getpid(), "create_time": psutil.Process().create_time() - 50})
    client.set(keys.scaler_lease("svc", "h"), dead)
    first, second = ScalerStore(client, "svc", "h"), ScalerStore(client, "svc", "h")

    first.acquire_lease()
    # the second saw the same dead holder before the first took over: its compare-and-set fails
    assert not second._take(keys=[keys.scaler_lease("svc", "h")], args=["me", 10_000, dead])  # noqa: SLF001 - the test drives the step itself
